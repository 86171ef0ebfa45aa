"""Check a deployment package against its manifest.json (sha256 of every file) before trusting it.

Standard library only: `validate_on_board.py` carries a copy of this function's source (hw/deploy.py puts
it there) and runs it *before* importing the driver, so driver code changed after the build is caught
rather than executed. On the host, `onebit validate` calls the same function on `deploy/`.
"""
import hashlib
import json
import os

# Unlisted files of these kinds are refused: code or data a validation would read, and any module Python can
# import (bytecode and extensions too: a .pyc in __pycache__ ran unchecked, issue 23).
CHECKED_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd", ".pth", ".json", ".npz", ".bit", ".hwh")
# (a pattern string, not a compiled one: validate_on_board.py inlines the code below its own imports)
_CACHED = r"^(?P<stem>[A-Za-z0-9_]+)\.[A-Za-z0-9_-]+(?:\.opt-(?P<opt>[12]))?\.pyc$"


def _compiled_from(pyc, source):
    """True when `pyc` is what this Python makes of `source` (a cache written by importing the checked
    driver, e.g. from a notebook), or bytecode of another Python version, which this interpreter never loads."""
    import importlib.util
    import marshal
    import re

    with open(pyc, "rb") as handle:
        data = handle.read()
    if data[:4] != importlib.util.MAGIC_NUMBER:
        return True
    match = re.match(_CACHED, os.path.basename(pyc))
    try:
        with open(source, "rb") as handle:
            code = compile(handle.read(), source, "exec", dont_inherit=True, optimize=int(match.group("opt") or 0))
    except (OSError, SyntaxError, ValueError):
        return False
    return marshal.dumps(code) == data[16:]


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
        for name in filenames:
            relative = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if relative == "manifest.json" or relative in listed or not name.endswith(CHECKED_SUFFIXES):
                continue
            if os.path.basename(dirpath) == "__pycache__":
                import re

                match = re.match(_CACHED, name)
                source = os.path.join(os.path.dirname(dirpath), match.group("stem") + ".py") if match else None
                source_relative = os.path.relpath(source, root).replace(os.sep, "/") if source else None
                if source_relative in listed and _compiled_from(os.path.join(dirpath, name), source):
                    continue  # Python's own cache of a checked module: the same code
                raise PackageIntegrityError("%s is bytecode that is not the compiled form of a listed module (added "
                                            "after the build); delete that __pycache__ folder, or %s"
                                            % (os.path.join(dirpath, name), redo))
            raise PackageIntegrityError("%s is not in manifest.json (added after the build); %s"
                                        % (os.path.join(dirpath, name), redo))
    return manifest
