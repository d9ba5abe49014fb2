//! How the process keeps the memory it frees. Every image allocates and frees the
//! same few large buffers (the upload's bytes, the decoded pixels, the resized
//! ones). glibc's malloc gives large blocks back to the kernel when they are freed
//! (mmap'd blocks, and the free top of a heap beyond its trim threshold), so the
//! next image takes a page fault for every 4 KiB it touches again: a tenth of the
//! service's CPU per image, measured by bench/service.py. Kept instead, the next
//! image reuses them.
//!
//! What this costs: a process holds on to what it freed, up to its peak, which is
//! what a worker's memory limit is sized for anyway (the chart sizes it for every
//! slot's worst image at once). So that threads cannot each keep a peak of their
//! own, malloc gets at most one heap (arena) per core instead of eight.

/// Blocks up to this size come from malloc's heaps, not from mmap of their own: the
/// most glibc takes on 64-bit systems (where its own threshold would climb to only
/// after freeing such blocks).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of a heap is given back only beyond this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Tells glibc's malloc to keep large freed blocks for reuse; whether it took the
/// settings. Call it first thing in `main`, before threads start. Does nothing
/// (false) with another C library.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters under malloc's own lock; the
    // parameters and values are ones mallopt(3) documents, and it returns 0 for a
    // value it refuses.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas()) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// One malloc arena per core (at least two).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn arenas() -> i32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    i32::try_from(cores.max(2)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
    }
}
