//! What the per-client limits cost in memory: a real `minilab api` behind one trusted
//! proxy gets upload tickets from N distinct client addresses (X-Forwarded-For), and
//! its resident memory is printed before and after each round. Each limiter keeps at
//! most 65,536 clients, so the memory must level off however many come. Run it with
//! `bench/limits-memory [ROUNDS] [PER_ROUND]` (default 3 rounds of 100,000); not a test.

use minilab_tests::{Api, Process, minilab_bin};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u32>().expect("a number"));
    let rounds = args.next().unwrap_or(3);
    let per_round = args.next().unwrap_or(100_000);
    // Tickets need no storage; S3 is never called (the endpoint refuses connections).
    let mut command = Command::new(minilab_bin());
    command
        .arg("api")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env_remove("AWS_PROFILE")
        .env("MINILAB_UPLOADS_BUCKET", "uploads")
        .env("MINILAB_PROCESSED_BUCKET", "processed")
        .args(["--listen", "127.0.0.1:0", "--trusted-proxy-hops", "1"]);
    let process = Process::start(&mut command, "minilab api listening on ");
    let api = Arc::new(Api::new(process.ready_line.clone()));
    let pid = process.pid();
    println!("clients      rss_mib   seconds");
    println!("{:>7} {:>12.1} {:>9}", 0, rss_kib(pid) as f64 / 1024.0, "-");
    let slots = Arc::new(Semaphore::new(64));
    for round in 0..rounds {
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(per_round as usize);
        for n in 0..per_round {
            let client = 0x0a00_0000u32 + round * per_round + n;
            let address = std::net::Ipv4Addr::from(client).to_string();
            let (api, slots) = (api.clone(), slots.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.expect("semaphore");
                let answer = api
                    .http
                    .post(format!("{}/api/v1/uploads", api.url))
                    .header("x-forwarded-for", address)
                    .json(&serde_json::json!({
                        "filename": "a.jpg", "contentType": "image/jpeg", "size": 1000, "recipe": "web"
                    }))
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(answer.status(), 201, "a new client is served");
            }));
        }
        for task in tasks {
            task.await.expect("request");
        }
        println!(
            "{:>7} {:>12.1} {:>9.1}",
            (round + 1) * per_round,
            rss_kib(pid) as f64 / 1024.0,
            started.elapsed().as_secs_f64()
        );
    }
}
