"""The real image under real OCI tools: built from the Dockerfile by buildah, run by runc.

:func:`built_image` runs ``tools/image/build.sh`` (buildah, ``--isolation chroot``, no pulls,
cached by content hash under ``~/.cache/portolan-image``) and returns the unpacked root file
system with the image's OCI config.  :meth:`Image.run` writes a runc bundle whose
``config.json`` starts from ``runc spec`` and is then narrowed the way a restricted pod is:
the image's user, env and entrypoint, a read-only root, no capabilities unless asked, its own
network namespace (runc brings up loopback only) and PID namespace unless asked, a tmpfs /tmp, and no ``rlimits`` (raising
them needs CAP_SYS_RESOURCE, which the build machines lack).  Limits: no cgroup limits, no
seccomp profile, no user namespace.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ("buildah", "runc", "mmdebstrap")
_names = itertools.count()


def require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    if not missing:
        return
    why = f"the image test needs {', '.join(missing)} (tools/test.sh installs the Debian packages)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}, and CI must not skip it")
    pytest.skip(why)


@dataclasses.dataclass(frozen=True)
class Mount:
    source: pathlib.Path
    destination: str
    writable: bool = False


@dataclasses.dataclass(frozen=True)
class Image:
    folder: pathlib.Path  # the cache folder: rootfs/, image.json, size

    @property
    def rootfs(self) -> pathlib.Path:
        return self.folder / "rootfs"

    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.folder / "image.json").read_text())["OCIv1"]["config"]  # type: ignore[no-any-return]

    def inside(self, path: pathlib.PurePosixPath) -> pathlib.Path:
        """``path`` as the container sees it: symbolic links resolved within the root file system.

        An image's absolute links (Debian's ``/var/run -> /run``) point into the image, never
        at this machine's own directories.
        """
        root = pathlib.PurePosixPath("/")
        parts = list(path.relative_to(root).parts)
        here = root
        links = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                here = here.parent
                continue
            candidate = self.rootfs / (here / part).relative_to(root)
            if not candidate.is_symlink():
                here = here / part
                continue
            links += 1
            if links > 40:  # the kernel's MAXSYMLINKS
                raise ValueError(f"{path}: too many symbolic links in the image")
            target = pathlib.PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                here = root
            parts = [*target.relative_to(root).parts, *parts] if target.is_absolute() else [*target.parts, *parts]
        return self.rootfs / here.relative_to(root)

    @property
    def size(self) -> tuple[int, int]:
        """Bytes: the unpacked file system, and its layers compressed as a registry would store them."""
        uncompressed, compressed = (self.folder / "size").read_text().split()
        return int(uncompressed), int(compressed)

    def bundle(self, folder: pathlib.Path, args: list[str], *, user: tuple[int, int] | None = None,
               capabilities: tuple[str, ...] = (), mounts: tuple[Mount, ...] = (),
               sysctl: dict[str, str] | None = None, env: dict[str, str] | None = None,
               network: str = "own", host_pid: bool = False) -> pathlib.Path:
        """A runc bundle for ``args`` (the image's entrypoint is not prepended).

        ``env`` is laid over the image's; ``network`` is ``own`` (a new namespace, loopback
        only), ``host`` (the caller's namespace) or the path of a namespace to join;
        ``host_pid`` keeps the caller's PID namespace (a pod's ``hostPID``: its /proc shows
        the host's processes).
        """
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").unlink(missing_ok=True)  # runc spec refuses to overwrite it
        subprocess.run(["runc", "spec", "--bundle", str(folder)], check=True, capture_output=True)
        spec = json.loads((folder / "config.json").read_text())
        image = self.config
        uid, gid = user if user is not None else (int(part) for part in image["User"].split(":"))
        caps = [f"CAP_{name}" for name in capabilities]
        variables = dict(item.split("=", 1) for item in image.get("Env", [])) | (env or {})
        namespaces = [ns for ns in spec["linux"]["namespaces"]
                      if ns["type"] != "network" and not (host_pid and ns["type"] == "pid")]
        if network == "own":
            namespaces.append({"type": "network"})
        elif network != "host":
            namespaces.append({"type": "network", "path": network})
        spec["linux"]["namespaces"] = namespaces
        spec["process"].update({
            "terminal": False, "args": args, "env": [f"{k}={v}" for k, v in variables.items()],
            "cwd": image.get("WorkingDir") or "/",
            "user": {"uid": uid, "gid": gid},
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps, "inheritable": caps},
            "noNewPrivileges": True,
        })
        spec["process"].pop("rlimits", None)
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["hostname"] = "portolan"
        spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "mode=1777", "size=16m"]})
        for mount in mounts:
            # runc would create a missing mount point in the shared, cached root file system.
            inside = pathlib.PurePosixPath(mount.destination)
            if not (inside.is_relative_to("/tmp") or self.inside(inside).is_dir()):
                raise ValueError(f"mount {mount.destination} outside /tmp and not in the image")
            spec["mounts"].append({"destination": mount.destination, "type": "bind", "source": str(mount.source),
                                   "options": ["rbind", "rw" if mount.writable else "ro"]})
        if sysctl:
            spec["linux"]["sysctl"] = sysctl
        (folder / "config.json").write_text(json.dumps(spec, indent=1))
        return folder

    def run(self, args: list[str], *, timeout: float = 120, **options: Any) -> subprocess.CompletedProcess[str]:
        """Run ``args`` in a fresh container (created, run and deleted by runc)."""
        with tempfile.TemporaryDirectory(prefix="portolan-runc-") as scratch:
            bundle = self.bundle(pathlib.Path(scratch) / "bundle", args, **options)
            name = f"portolan-test-{os.getpid()}-{next(_names)}"
            try:
                return subprocess.run(["runc", "run", "--bundle", str(bundle), name], capture_output=True, text=True,
                                      timeout=timeout, stdin=subprocess.DEVNULL)
            finally:
                subprocess.run(["runc", "delete", "--force", name], capture_output=True)

    def entrypoint(self, *args: str) -> list[str]:
        return [*self.config["Entrypoint"], *args]


def built_image() -> Image:
    require_tools()
    done = subprocess.run([str(ROOT / "tools/image/build.sh")], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise AssertionError(f"tools/image/build.sh failed:\n{done.stderr[-6000:]}")
    return Image(pathlib.Path(done.stdout.strip().splitlines()[-1]))
