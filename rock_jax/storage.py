"""Local paths and `gs://` URLs behind one set of file operations.

Every file the framework reads or writes goes through here, so a work
directory, a data directory, a model folder or an analysis folder may be a
local path or a Cloud Storage URL alike. URLs go through `etils.epath` (which
picks `tf.io.gfile` when TensorFlow is installed, else fsspec with `gcsfs`),
local paths through `os`. Native readers that only open local files
(safetensors' memory maps, tokenizers, ArrayRecord) get a checked local copy
(`mirror`).

Object storage has no rename: an object only becomes visible once its upload
has finished, so a single-object write is already all-or-nothing there, and
local files get the same guarantee from a temporary file and `os.replace`.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

from etils import epath

# Temporary files are created 0600; the renamed file gets the mode a plain
# `open` would have given it. Read once: `os.umask` can only be read by
# setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)


class StorageError(OSError):
  """A path or URL that cannot be used, with what was wrong and what to do."""


def is_url(path: str | os.PathLike) -> bool:
  """Whether `path` names an object store (`gs://...`) rather than a file."""
  return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
  """Local paths made absolute; URLs as given, without a trailing slash."""
  path = os.fspath(path)
  return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def join(base: str | os.PathLike, *parts: str) -> str:
  """`os.path.join` for paths, `/`-joined for URLs."""
  base = os.fspath(base)
  if not is_url(base):
    return os.path.join(base, *parts)
  return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def basename(path: str | os.PathLike) -> str:
  """The last component of a path or URL."""
  return os.path.basename(os.fspath(path).rstrip("/"))


def dirname(path: str | os.PathLike) -> str:
  """The folder holding `path` (the parent prefix of a URL)."""
  path = os.fspath(path).rstrip("/")
  if not is_url(path):
    return os.path.dirname(path)
  head, _, _ = path.rpartition("/")
  return head if "://" in head and not head.endswith(":/") else path


def exists(path: str | os.PathLike) -> bool:
  """Whether a file, folder or (URL) prefix is there."""
  if not is_url(path):
    return os.path.exists(path)
  return epath.Path(path).exists()


def isfile(path: str | os.PathLike) -> bool:
  """Whether `path` is a file (an object, for URLs)."""
  if not is_url(path):
    return os.path.isfile(path)
  return epath.Path(path).is_file()


def isdir(path: str | os.PathLike) -> bool:
  """Whether `path` is a folder (a non-empty prefix, for URLs)."""
  if not is_url(path):
    return os.path.isdir(path)
  return epath.Path(path).is_dir()


def listdir(path: str | os.PathLike) -> list[str]:
  """The names directly inside a folder or prefix, sorted."""
  if not is_url(path):
    return sorted(os.listdir(path))
  return sorted(p.name for p in epath.Path(path).iterdir())


def makedirs(path: str | os.PathLike) -> None:
  """Creates a folder and its parents (URLs need none: a no-op check)."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)


def rmtree(path: str | os.PathLike) -> None:
  """Removes a folder (or prefix) and all below it; missing is fine."""
  if not is_url(path):
    shutil.rmtree(path, ignore_errors=True)
    return
  p = epath.Path(path)
  if p.exists():
    p.rmtree()


def remove(path: str | os.PathLike) -> None:
  """Removes one file or object."""
  if is_url(path):
    epath.Path(path).unlink()
  else:
    os.remove(path)


def read_bytes(path: str | os.PathLike) -> bytes:
  """A file's or object's contents."""
  if not is_url(path):
    with open(path, "rb") as f:
      return f.read()
  return epath.Path(path).read_bytes()


def read_text(path: str | os.PathLike) -> str:
  """A UTF-8 file's or object's contents."""
  return read_bytes(path).decode("utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes a whole file at once: readers see the old or the new contents.

  Locally a temporary file in the same folder is renamed into place; an
  object store publishes an object only when its upload completes.
  """
  path = os.fspath(path)
  if is_url(path):
    epath.Path(path).write_bytes(data)
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  """`write_bytes` of UTF-8 text."""
  write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def open_for_write(path: str | os.PathLike) -> Iterator[io.BytesIO]:
  """A binary buffer whose contents `write_bytes` stores on success.

  For writers that want a file object (NumPy, Matplotlib); nothing is
  written if the block raises.
  """
  buffer = io.BytesIO()
  yield buffer
  write_bytes(path, buffer.getvalue())


def glob(folder: str | os.PathLike, pattern: str) -> list[str]:
  """Paths inside `folder` matching a shell pattern, sorted."""
  if not is_url(folder):
    import glob as glob_lib  # noqa: PLC0415 (the name is this function's)

    return sorted(
      glob_lib.glob(os.path.join(glob_lib.escape(os.fspath(folder)), pattern))
    )
  # Matched per component here: the folder's own name is not a pattern.
  folder = absolute(folder)
  fs, root = _fs_and_path(folder)
  parts = pattern.split("/")
  found = []
  for name in fs.find(root, withdirs=True, maxdepth=len(parts)):
    rel = name[len(root.rstrip("/")) + 1 :].rstrip("/").split("/")
    if (
      len(rel) == len(parts)
      and all(rel)
      and all(
        fnmatch.fnmatchcase(r, p) for r, p in zip(rel, parts, strict=True)
      )
    ):
      found.append(join(folder, *rel))
  return sorted(found)


def upload(local: str | os.PathLike, url: str, *, last: tuple = ()) -> None:
  """Copies a local folder's files to `url/` (`last` names go last).

  A reader that tests for a `last` file (e.g. `config.json`,
  `dataset_info.json`) never sees a half-copied folder.
  """
  local = os.fspath(local)
  files = sorted(
    os.path.relpath(os.path.join(root, n), local)
    for root, _, names in os.walk(local)
    for n in names
  )
  files.sort(key=lambda f: os.path.basename(f) in last)
  for rel in files:
    upload_file(os.path.join(local, rel), join(url, *rel.split(os.sep)))


def upload_file(local: str | os.PathLike, url: str) -> None:
  """Copies one local file to the object `url`, streamed."""
  with open(local, "rb") as src, epath.Path(url).open("wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 24)


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike, *, last: tuple = ()):
  """A local folder to write into, published at `path` on success.

  Local paths are written in place; for a URL the folder is a temporary
  one, uploaded (`upload`, `last` files last) when the block ends cleanly.
  """
  path = os.fspath(path)
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="rock_jax-stage-") as tmp:
    yield tmp
    upload(tmp, path, last=last)


def _fs_and_path(url: str):
  import fsspec  # noqa: PLC0415 (URLs only)

  return fsspec.core.url_to_fs(url)


def _objects(url: str) -> tuple[dict[str, dict], bool]:
  """`({relative name: object info}, whether the URL is one object)` of a
  file URL or of all below a prefix."""
  fs, root = _fs_and_path(url)
  if fs.isfile(root):
    return {os.path.basename(root): fs.info(root)}, True
  found = fs.find(root, detail=True)
  root = root.rstrip("/") + "/"
  objects = {
    name[len(root) :]: info
    for name, info in found.items()
    if name.startswith(root) and not name.endswith("/")
  }
  return objects, False


def _checksum(path: str) -> str:
  """A local file's CRC32C, base64 as Cloud Storage reports it."""
  import google_crc32c  # noqa: PLC0415 (gcsfs's dependency; URLs only)

  crc = google_crc32c.Checksum()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 24), b""):
      crc.update(block)
  return base64.b64encode(crc.digest()).decode()


def local_cache() -> str:
  """This machine's folder for mirrors: `$ROCK_JAX_CACHE` when that is a
  local path, else `~/.cache/rock_jax`."""
  cache = os.environ.get("ROCK_JAX_CACHE", "")
  if cache and not is_url(cache):
    return cache
  return os.path.join(os.path.expanduser("~"), ".cache", "rock_jax")


def mirror(url: str, cache: str | os.PathLike | None = None) -> str:
  """A checked local copy of a URL's file or folder; local paths pass as is.

  The copy lives in `cache/mirror/<scheme>/<bucket>/<path>@<digest>`
  (`cache` defaults to `local_cache()`), where the digest
  covers every object's name, size and generation: it is filled once per
  machine (concurrent processes each download into a temporary folder and
  the first rename wins), every file is checked against the object's size
  and CRC32C, and a changed object gives a new copy instead of a stale one.

  Returns:
    The local path (a folder for a prefix, a file for an object).
  """
  if not is_url(url):
    return os.fspath(url)
  url = absolute(url)
  cache = local_cache() if cache is None else os.fspath(cache)
  objects, single = _call(url, "read", lambda: _objects(url))
  if not objects:
    raise StorageError(f"{url}: no such object or folder")
  listing = sorted(
    (name, int(info.get("size", 0)), str(info.get("generation", "")))
    for name, info in objects.items()
  )
  digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
  scheme, _, rest = url.partition("://")
  target = (
    os.path.join(cache, "mirror", scheme, *rest.split("/")) + f"@{digest}"
  )
  if not os.path.isdir(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".tmp-")
    try:
      _download(url, objects, tmp, single)
      os.rename(tmp, target)
    except OSError:
      shutil.rmtree(tmp, ignore_errors=True)
      if not os.path.isdir(target):  # Not another process's earlier rename.
        raise
  if single:
    return os.path.join(target, next(iter(objects)))
  return target


def _download(url: str, objects: dict, folder: str, single: bool) -> None:
  """Downloads `objects` into `folder` and checks size and CRC32C."""
  fs, root = _fs_and_path(url)
  names = list(objects)
  sources = [root if single else f"{root.rstrip('/')}/{n}" for n in names]
  targets = [os.path.join(folder, *n.split("/")) for n in names]
  for target in targets:
    os.makedirs(os.path.dirname(target), exist_ok=True)
  # One call: gcsfs fetches the files concurrently (a model's shards).
  _call(url, "read", lambda: fs.get(sources, targets))
  for name, local in zip(names, targets, strict=True):
    info = objects[name]
    size, crc = os.path.getsize(local), info.get("crc32c")
    if size != int(info.get("size", size)) or (crc and _checksum(local) != crc):
      raise StorageError(
        f"{url}/{name}: the downloaded copy does not match the object "
        f"({size} bytes, expected {info.get('size')}; CRC32C {crc}); the "
        "object changed during the copy or the transfer was corrupted: retry"
      )


def check_writable(path: str, what: str) -> None:
  """Fails unless `path` (a URL or folder) can be written, naming `what`.

  For a URL the bucket must exist and take a probe object (written and
  removed again), so a missing bucket, missing credentials or a read-only
  permission show up before anything runs.
  """
  if not is_url(path):
    return
  probe = join(path, f".write-probe-{uuid.uuid4().hex}")
  _call(path, "write", lambda: write_bytes(probe, b""), what=what)
  _call(path, "write", lambda: remove(probe), what=what)


def check_readable(path: str, what: str) -> None:
  """Fails unless the URL `path` names an object or a non-empty prefix."""
  if not is_url(path):
    return
  if not _call(path, "read", lambda: exists(path), what=what):
    _bucket_exists(path, f"{what}={path!r}")
    raise StorageError(f"{what}={path!r}: no such object or folder")


def check_bucket(url: str, what: str) -> None:
  """Fails unless a URL's bucket exists (the prefix itself may be empty)."""
  if is_url(url):
    _call(url, "read", lambda: _bucket_exists(url, f"{what}={url!r}"), what)


def _bucket_exists(url: str, name: str) -> None:
  """Raises, naming `name`, if the URL's bucket is not there."""
  fs, root = _fs_and_path(url)
  bucket = root.split("/")[0]
  try:
    fs.ls(bucket)
  except FileNotFoundError:
    raise StorageError(
      f"{name}: bucket {bucket!r} does not exist (or these credentials "
      "cannot see it); create it or fix the URL"
    ) from None


def _call(url: str, action: str, fn, what: str | None = None):
  """Runs a storage call; a failure becomes one `StorageError` naming the
  URL, what was wrong and what to do, instead of a client's traceback."""
  name = f"{what}={url!r}" if what else url
  try:
    return fn()
  except StorageError:
    raise
  except FileNotFoundError:
    if action == "write":
      _bucket_exists(url, name)
    raise StorageError(f"{name}: no such object or folder") from None
  except OSError as e:
    # gcsfs reports HTTP 403 as a plain OSError("Forbidden: ...").
    if not isinstance(e, PermissionError) and "Forbidden" not in str(e)[:20]:
      raise StorageError(
        f"{name}: cannot {action} ({type(e).__name__}: {_short(e)})"
      ) from None
    raise StorageError(
      f"{name}: permission denied to {action} ({_short(e)}); grant these "
      "credentials access to the bucket or use another location"
    ) from None
  except Exception as e:  # noqa: BLE001 (clients raise their own types)
    if _is_credentials_error(e):
      raise StorageError(
        f"{name}: no usable credentials for Cloud Storage ({_short(e)}); on "
        "a TPU/GCE VM attach a service account, elsewhere run `gcloud auth "
        "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
      ) from None
    raise StorageError(
      f"{name}: cannot {action} ({type(e).__name__}: {_short(e)})"
    ) from None


def _is_credentials_error(e: BaseException) -> bool:
  kind = f"{type(e).__module__}.{type(e).__name__}"
  return "google.auth" in kind or "401" in str(e)[:200]


def _short(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else type(e).__name__
