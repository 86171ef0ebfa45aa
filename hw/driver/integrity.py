"""Check a deployment package against its manifest.json (sha256 of every file) before trusting it.

Standard library only: `validate_on_board.py` carries a copy of this function's source (hw/deploy.py puts
it there) and runs it *before* importing the driver, so driver code changed after the build is caught
rather than executed. On the host, `onebit validate` calls the same function on `deploy/`.
"""
import hashlib
import json
import os

# Unlisted files of these kinds are refused: code or data a validation would read.
CHECKED_SUFFIXES = (".py", ".json", ".npz", ".bit", ".hwh")


class PackageIntegrityError(Exception):
    """A deployment package whose files differ from its manifest.json: one line saying which and what to do."""


def verify_package(folder):
    """Every file in folder/manifest.json exists, stays inside the folder and has its sha256; returns the manifest."""
    root = os.path.realpath(str(folder))
    manifest_path = os.path.join(root, "manifest.json")
    redo = "re-copy the deployment package (deploy.zip) or remake it with `python -m hw.deploy BUILD_DIR`"
    try:
        with open(manifest_path) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as error:
        raise PackageIntegrityError("%s is unreadable (%s); %s" % (manifest_path, error, redo))
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not files:
        raise PackageIntegrityError("%s lists no files; %s" % (manifest_path, redo))
    listed = set()
    for entry in files:
        relative = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(relative, str) or not relative or os.path.isabs(relative) or ".." in relative.split("/"):
            raise PackageIntegrityError("%s: path %r leaves the package; %s" % (manifest_path, relative, redo))
        full = os.path.realpath(os.path.join(root, relative))
        if not full.startswith(root + os.sep):
            raise PackageIntegrityError("%s: path %r leaves the package; %s" % (manifest_path, relative, redo))
        if not os.path.isfile(full):
            raise PackageIntegrityError("%s is missing (listed in manifest.json); %s" % (full, redo))
        digest = hashlib.sha256()
        with open(full, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != entry.get("sha256"):
            raise PackageIntegrityError("%s changed after the build (sha256 differs from manifest.json); %s"
                                        % (full, redo))
        listed.add(relative)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            relative = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if relative != "manifest.json" and relative not in listed and name.endswith(CHECKED_SUFFIXES):
                raise PackageIntegrityError("%s is not in manifest.json (added after the build); %s"
                                            % (os.path.join(dirpath, name), redo))
    return manifest
