#!/usr/bin/env python3
"""Fetch the picoquic and picotls sources into ``subprojects/`` for Meson.

aiopquic does not vendor third-party C code.  picoquic 1.1.53.0 and picotls
are taken from the sdist of ``aiopquic==0.6.1`` on the package index, which
pip itself knows how to reach (it honours the machine's pip configuration).

Steps (the slow path, needs network once):

1. ``python -m pip download --no-deps --no-binary aiopquic
   --ignore-requires-python aiopquic==0.6.1 -d subprojects/packagecache``
   (skipped if the tarball is already cached with the right hash);
2. verify its sha256;
3. extract only ``aiopquic-0.6.1/third_party/{picoquic,picotls}`` into
   ``subprojects/picoquic`` and ``subprojects/picotls`` (members are checked,
   no path traversal, ``tarfile`` ``filter='data'`` when available);
4. copy the overlay files of ``subprojects/packagefiles/<tree>/`` (our
   ``meson.build`` files) into each tree and apply its ``*.patch`` files in
   sorted order with ``patch -p1`` (or ``git apply``) from the tree root;
5. write ``subprojects/<tree>/.aiopquic-stamp`` last.

Fast path (offline): when both stamps record the expected sdist hash and the
current digest of the patches, nothing is fetched; overlay files are re-copied
only if they changed.  If a patch changed, the trees are re-extracted from the
cached tarball (still offline) and all patches are re-applied.

On stdout the script prints the overlay and patch files (paths relative to the
repository root, one per line) so that ``meson.build`` can ``fs.read`` them and
reconfigure when one of them is edited.  Progress and errors go to stderr.
Exit status is non-zero on any failure, with a message saying what to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

PACKAGE = "aiopquic"
VERSION = "0.6.1"
SDIST_SHA256 = "72579146e0f22859a5a7c197246604fef460b9e1b578a2910156dff7679efd29"
SDIST_NAME = f"{PACKAGE}-{VERSION}.tar.gz"
TREES = ("picoquic", "picotls")
TARBALL_PREFIX = f"{PACKAGE}-{VERSION}/third_party"
STAMP_NAME = ".aiopquic-stamp"
STAMP_FORMAT = 1

REPO = Path(__file__).resolve().parent.parent
SUBPROJECTS = REPO / "subprojects"
PACKAGEFILES = SUBPROJECTS / "packagefiles"
PACKAGECACHE = SUBPROJECTS / "packagecache"


class FetchError(Exception):
    """A failure with a message telling the user what to do."""


def log(msg: str) -> None:
    print(f"fetch_sources: {msg}", file=sys.stderr, flush=True)


def pip_download_cmd() -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--no-binary", PACKAGE, "--ignore-requires-python",
        f"{PACKAGE}=={VERSION}", "-d", str(PACKAGECACHE),
    ]


def shell_join(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- overlays and patches ---------------------------------------------------

def overlay_files(tree: str) -> list[Path]:
    """Files copied verbatim into the tree (everything but ``*.patch``)."""
    base = PACKAGEFILES / tree
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix != ".patch")


def patch_files(tree: str) -> list[Path]:
    base = PACKAGEFILES / tree
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob("*.patch") if p.is_file())


def digest(files: list[Path], tree: str) -> str:
    h = hashlib.sha256()
    base = PACKAGEFILES / tree
    for p in files:
        h.update(p.relative_to(base).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def copy_overlays(tree: str, dest: Path) -> None:
    base = PACKAGEFILES / tree
    for src in overlay_files(tree):
        target = dest / src.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


def apply_patches(tree: str, dest: Path) -> None:
    patches = patch_files(tree)
    if not patches:
        return
    use_patch = shutil.which("patch") is not None
    if not use_patch and shutil.which("git") is None:
        raise FetchError(
            f"{len(patches)} patch(es) for {tree} need `patch` or `git`, and neither "
            "is on PATH. Install one (e.g. `apt-get install patch`) and rerun "
            f"`{sys.executable} {Path(__file__).resolve()}`."
        )
    for p in patches:
        if use_patch:
            cmd = ["patch", "-p1", "--forward", "--batch", "--fuzz=0", "--no-backup-if-mismatch",
                   "-i", str(p)]
        else:
            cmd = ["git", "apply", "-p1", "--whitespace=nowarn", str(p)]
        log(f"applying {p.relative_to(REPO)} to {tree}")
        # Keep git from finding an enclosing repository (it would then apply
        # paths relative to that repository's top).
        env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(dest.parent))
        r = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise FetchError(
                f"patch {p.relative_to(REPO)} does not apply to {tree} from "
                f"{PACKAGE} {VERSION} (`{shell_join(cmd)}` in the {tree} tree exited "
                f"{r.returncode}):\n{r.stdout}{r.stderr}\n"
                f"Fix or remove that patch, then rerun `{sys.executable} "
                f"{Path(__file__).resolve()}`."
            )


# --- stamps -----------------------------------------------------------------

def wanted_stamp(tree: str) -> dict[str, object]:
    return {
        "format": STAMP_FORMAT,
        "sdist": SDIST_NAME,
        "sdist_sha256": SDIST_SHA256,
        "patches_sha256": digest(patch_files(tree), tree),
        "overlays_sha256": digest(overlay_files(tree), tree),
    }


def read_stamp(tree: str) -> dict[str, object] | None:
    path = SUBPROJECTS / tree / STAMP_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_stamp(tree: str, stamp: dict[str, object]) -> None:
    path = SUBPROJECTS / tree / STAMP_NAME
    tmp = path.with_name(STAMP_NAME + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --- download and extraction ------------------------------------------------

def ensure_tarball() -> Path:
    tarball = PACKAGECACHE / SDIST_NAME
    if tarball.is_file() and sha256_file(tarball) == SDIST_SHA256:
        log(f"using cached {tarball.relative_to(REPO)}")
        return tarball
    PACKAGECACHE.mkdir(parents=True, exist_ok=True)
    if tarball.exists():
        log(f"cached {tarball.relative_to(REPO)} has the wrong hash; downloading again")
        tarball.unlink()
    cmd = pip_download_cmd()
    log(f"downloading the {PACKAGE} {VERSION} sdist (picoquic + picotls sources): "
        f"{shell_join(cmd)}")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise FetchError(
            "pip download timed out after 900 s. Check network access to the package "
            f"index (pip config list), then run:\n  {shell_join(cmd)}"
        ) from None
    except OSError as e:
        raise FetchError(f"cannot run {sys.executable}: {e}") from None
    if r.returncode != 0:
        out = (r.stdout + r.stderr).strip()
        hint = "Check network access to the package index (see `pip config list`)."
        if "No module named pip" in out:
            hint = ("pip is not available to this Python. For an isolated build "
                    "(`pip install .`) list `pip` in [build-system] requires; or "
                    "install pip.")
        raise FetchError(
            f"pip download of {PACKAGE}=={VERSION} failed (exit {r.returncode}):\n"
            f"{out[-3000:]}\n{hint} Then run:\n  {shell_join(cmd)}"
        )
    if not tarball.is_file():
        found = ", ".join(sorted(p.name for p in PACKAGECACHE.iterdir())) or "nothing"
        raise FetchError(
            f"pip download succeeded but {tarball.relative_to(REPO)} is missing "
            f"(found: {found}). Run by hand and check what it fetches:\n  {shell_join(cmd)}"
        )
    got = sha256_file(tarball)
    if got != SDIST_SHA256:
        raise FetchError(
            f"sha256 mismatch for {tarball}: got {got}, expected {SDIST_SHA256}. "
            f"The index served a different file; delete it (`rm {tarball}`) and check "
            "which index pip uses (`pip config list`)."
        )
    return tarball


def _select_members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members under third_party/{picoquic,picotls}, validated by hand."""
    prefixes = tuple(f"{TARBALL_PREFIX}/{t}/" for t in TREES)
    for m in tf.getmembers():
        name = PurePosixPath(m.name)
        if not (m.name + "/").startswith(prefixes):
            continue
        if name.is_absolute() or ".." in name.parts:
            raise FetchError(f"unsafe path in {SDIST_NAME}: {m.name!r}")
        if m.issym() or m.islnk():
            target = PurePosixPath(m.linkname)
            if target.is_absolute() or ".." in target.parts:
                log(f"skipping link {m.name} -> {m.linkname}")
                continue
        elif not (m.isfile() or m.isdir()):
            log(f"skipping special file {m.name}")
            continue
        yield m


def extract(tarball: Path, dest: Path) -> None:
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            members = list(_select_members(tf))
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: members were validated above
                tf.extractall(dest, members=members)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FetchError(
            f"cannot extract {tarball}: {e}. Delete it (`rm {tarball}`) and rerun "
            f"`{sys.executable} {Path(__file__).resolve()}`."
        ) from None
    for t in TREES:
        if not (dest / TARBALL_PREFIX / t).is_dir():
            raise FetchError(f"{SDIST_NAME} has no {TARBALL_PREFIX}/{t} directory")


def full_fetch() -> None:
    tarball = ensure_tarball()
    with tempfile.TemporaryDirectory(prefix="extract-", dir=PACKAGECACHE) as tmp:
        tmpdir = Path(tmp)
        log(f"extracting {', '.join(TREES)} from {tarball.name}")
        extract(tarball, tmpdir)
        for t in TREES:
            tree = tmpdir / TARBALL_PREFIX / t
            copy_overlays(t, tree)
            apply_patches(t, tree)
        for t in TREES:
            dest = SUBPROJECTS / t
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmpdir / TARBALL_PREFIX / t, dest)
    for t in TREES:  # stamps last: a crash before here means "fetch again"
        write_stamp(t, wanted_stamp(t))
    log("sources ready in " + ", ".join(f"subprojects/{t}" for t in TREES))


# --- main -------------------------------------------------------------------

@contextlib.contextmanager
def lock() -> Iterator[None]:
    """Serialise concurrent runs (e.g. two `meson setup`s) on one checkout."""
    PACKAGECACHE.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(PACKAGECACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sync() -> None:
    stamps = {t: read_stamp(t) for t in TREES}
    wanted = {t: wanted_stamp(t) for t in TREES}

    def same(t: str, *keys: str) -> bool:
        s = stamps[t]
        return s is not None and all(s.get(k) == wanted[t][k] for k in keys)

    base_keys = ("format", "sdist_sha256", "patches_sha256")
    if all(same(t, *base_keys) for t in TREES):
        for t in TREES:
            if not same(t, "overlays_sha256"):
                log(f"overlay files for {t} changed: copying them again")
                copy_overlays(t, SUBPROJECTS / t)
                write_stamp(t, wanted[t])
        return
    full_fetch()


def main() -> int:
    try:
        with lock():
            sync()
    except FetchError as e:
        log(f"ERROR: {e}")
        return 1
    except OSError as e:
        log(f"ERROR: {e}. Rerun `{sys.executable} {Path(__file__).resolve()}` "
            "after fixing it; delete subprojects/picoquic and subprojects/picotls "
            "to force a clean fetch.")
        return 1
    for t in TREES:  # inputs for Meson's reconfigure tracking
        for p in overlay_files(t) + patch_files(t):
            print(p.relative_to(REPO).as_posix())
    print(Path(__file__).resolve().relative_to(REPO).as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main())
