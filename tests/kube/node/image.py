#!/usr/bin/env python3
"""The Dockerfile's runtime image, built without a container engine: the runtime
stage's Debian release and packages (mmdebstrap, minbase, with the -slim images'
dpkg path excludes), then the binary where the stage copies it, its USER, ENTRYPOINT
and CMD. Everything is read from the Dockerfile (BuildKit's own parser, the
`dockerfile` package), so the two cannot drift apart; tests/node checks the result.

    image.py --dockerfile Dockerfile --binary target/minilab --cache DIR \\
             --name minilab.local/minilab:test -o OUT.tar

The Debian layer is cached in DIR by release and package list (about 50 s to make)."""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dockerfile

HERE = Path(__file__).resolve().parent
# What the debian:*-slim images leave out (their /etc/dpkg/dpkg.cfg.d/docker).
SLIM_EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/groff/*",
                 "/usr/share/lintian/*", "/usr/share/linda/*", "/usr/share/locale/*"]


def runtime_stage(path):
    """{release, packages, copy_to, user, entrypoint, cmd} of the Dockerfile's last stage."""
    commands = dockerfile.parse_file(str(path))
    args = {}
    for command in commands:
        if command.cmd == "ARG" and "=" in command.value[0]:
            name, value = command.value[0].split("=", 1)
            args[name] = value
    starts = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    stage = commands[starts[-1]:]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage[0].value[0])
    found = re.fullmatch(r"debian:(\w+)-slim", base)
    if not found:
        raise SystemExit(f"the runtime stage starts FROM {base}, not debian:RELEASE-slim")
    runs = " ".join(" ".join(c.value) for c in stage if c.cmd == "RUN")
    install = re.search(r"apt-get install ((?:[^&])+)", runs)
    packages = sorted(word for word in install.group(1).split() if not word.startswith("-"))
    copies = [c for c in stage if c.cmd == "COPY"]
    if len(copies) != 1:
        raise SystemExit(f"the runtime stage copies {len(copies)} things; this builder knows one binary")
    single = {c.cmd: c for c in stage if c.cmd in ("USER", "ENTRYPOINT", "CMD")}
    return {"release": found.group(1), "packages": packages, "copy_to": copies[0].value[-1],
            "user": single["USER"].value[0] if "USER" in single else "",
            "entrypoint": list(single["ENTRYPOINT"].value) if "ENTRYPOINT" in single else None,
            "cmd": list(single["CMD"].value) if "CMD" in single else None}


def debian_layer(release, packages, cache):
    """A minbase root file system with the packages, as a tar, made once per list."""
    key = hashlib.sha256(json.dumps([release, packages, SLIM_EXCLUDES]).encode()).hexdigest()[:16]
    layer = Path(cache) / f"rootfs-{release}-{key}.tar"
    if layer.exists():
        return layer
    Path(cache).mkdir(parents=True, exist_ok=True)
    mirror = "http://deb.debian.org/debian"
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", "--include=" + ",".join(packages),
         *[f"--dpkgopt=path-exclude={p}" for p in SLIM_EXCLUDES], "--dpkgopt=path-include=/usr/share/doc/*/copyright",
         release, str(layer) + ".part",
         f"deb {mirror} {release} main", f"deb {mirror} {release}-updates main",
         f"deb http://deb.debian.org/debian-security {release}-security main"],
        check=True)
    os.replace(str(layer) + ".part", layer)
    return layer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dockerfile", required=True)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()

    stage = runtime_stage(args.dockerfile)
    base = debian_layer(stage["release"], stage["packages"], args.cache)
    with tempfile.TemporaryDirectory() as top:
        target = Path(top) / stage["copy_to"].lstrip("/")
        target.parent.mkdir(parents=True)
        # The test build carries line tables; the image needs none.
        subprocess.run(["objcopy", "--strip-debug", args.binary, str(target)], check=True)
        os.chmod(target, 0o755)
        command = [sys.executable, str(HERE / "mkoci.py"), "--layer", str(base), "--layer", top,
                   "--name", args.name, "--user", stage["user"], "-o", args.output]
        if stage["entrypoint"] is not None:
            command += ["--entrypoint", json.dumps(stage["entrypoint"])]
        if stage["cmd"] is not None:
            command += ["--cmd", json.dumps(stage["cmd"])]
        subprocess.run(command, check=True)
        binary = target.stat().st_size
    print(f"image {args.name}: {os.path.getsize(args.output) / 2**20:.0f} MiB uncompressed "
          f"(Debian {stage['release']} layer {base.stat().st_size / 2**20:.0f} MiB with {', '.join(stage['packages'])}; "
          f"binary {binary / 2**20:.0f} MiB)")
    json.dump(stage, open(args.output + ".json", "w"))


if __name__ == "__main__":
    main()
