#!/usr/bin/env python3
"""An OCI image archive (oci-layout, index.json, blobs/sha256/*) for `ctr images
import`, from layers given as folders or tar files, the first the lowest:

    mkoci.py --layer ROOTFS[.tar] [--layer ...] --name NAME:TAG -o OUT.tar
             [--entrypoint JSON_LIST] [--cmd JSON_LIST] [--user UID:GID]

No registry is reachable here and no image builder runs: this is what a container
engine would import. Files of a folder layer are owned by root, with mtime 0."""
import argparse
import hashlib
import io
import json
import os
import tarfile


def folder_layer(root):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            files.sort()
            for name in subfolders + files:
                path = os.path.join(folder, name)
                info = layer.gettarinfo(path, os.path.relpath(path, root))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        layer.addfile(info, f)
                else:
                    layer.addfile(info)
    return out.getvalue()


def add_blob(archive, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
    return {"digest": "sha256:" + digest, "size": len(data)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer", action="append", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("-o", "--output", required=True)
    # JSON lists: a command's own flags (`--help`) are not this script's.
    parser.add_argument("--entrypoint", type=json.loads)
    parser.add_argument("--cmd", type=json.loads)
    parser.add_argument("--user", default="")
    args = parser.parse_args()

    layers = []
    for layer in args.layer:
        if os.path.isdir(layer):
            layers.append(folder_layer(layer))
        else:
            with open(layer, "rb") as f:
                layers.append(f.read())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Entrypoint": args.entrypoint, "Cmd": args.cmd, "User": args.user, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/kube/node/mkoci.py"} for _ in layers],
    }
    with tarfile.open(args.output, "w") as archive:
        layer_blobs = [add_blob(archive, data) for data in layers]
        config_blob = add_blob(archive, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_blob},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob} for blob in layer_blobs],
        }
        manifest_blob = add_blob(archive, json.dumps(manifest).encode())
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_blob,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": args.name,
                            "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1]}}]}
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", json.dumps(index).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
