"""A Cloud Storage API server on loopback for the `gs://` tests.

`gcp-storage-emulator` serves the GCS JSON API; every client reaches it the
standard way: gcsfs and google-cloud-storage through `STORAGE_EMULATOR_HOST`,
tensorstore (orbax's storage) through `TENSORSTORE_GCS_HTTP_URL`. Processes
started by a test inherit the variables. Bucket `rock-test` takes any
object; bucket `read-only` answers every write with 403, as Cloud Storage does
for credentials that may only read.
"""

import json
import os
import re
import socket
import urllib.parse

BUCKET = "rock-test"
READ_ONLY = "read-only"


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _read_only_handler(base):
  """The emulator's request handler, refusing writes to `READ_ONLY`."""

  class Handler(base):
    def handle(self):
      # A client that closes early (retries, range reads) is not an error.
      try:
        super().handle()
      except (BrokenPipeError, ConnectionResetError):
        pass

    def _refused(self):
      path = self.path.split("?")[0]
      if f"/b/{READ_ONLY}/o" not in path:
        return False
      body = json.dumps(
        {"error": {"code": 403, "message": "Forbidden: read-only bucket"}}
      ).encode()
      self.send_response(403)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)
      return True

    def end_headers(self):
      # Cloud Storage names an object's generation on every media download;
      # tensorstore's conditional writes (orbax's OCDBT manifests) build on
      # it, and the emulator leaves it out.
      path, _, query = self.path.partition("?")
      match = re.search(r"/b/([^/]+)/o/(.+)$", path)
      if self.command == "GET" and "alt=media" in query and match:
        bucket, name = match[1], urllib.parse.unquote(match[2])
        try:
          obj = self.storage.get_file_obj(bucket, name)
        except Exception:  # noqa: BLE001 (absent: the 404 says so)
          obj = None
        if obj:
          self.send_header("x-goog-generation", str(obj["generation"]))
          self.send_header("x-goog-metageneration", str(obj["metageneration"]))
      super().end_headers()

    def _writing(verb):
      def handle(self):
        if not self._refused():
          getattr(base, f"do_{verb}")(self)

      return handle

    do_POST = _writing("POST")
    do_PUT = _writing("PUT")
    do_DELETE = _writing("DELETE")
    do_PATCH = _writing("PATCH")

  return Handler


def start_server():
  """Starts the server in this process and points every client at it.

  Returns:
    The server (call `stop()`).
  """
  from gcp_storage_emulator import server as server_lib  # noqa: PLC0415
  from gcp_storage_emulator.handlers import buckets  # noqa: PLC0415

  server_lib.RequestHandler = _read_only_handler(server_lib.RequestHandler)
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  os.environ["STORAGE_EMULATOR_HOST"] = url
  os.environ["TENSORSTORE_GCS_HTTP_URL"] = url
  # gcsfs otherwise probes each bucket's type over gRPC first (a minute's
  # stall per bucket against an emulator).
  os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
  os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "rock-jax-test")
  server = server_lib.create_server(
    "127.0.0.1", port, in_memory=True, default_bucket=BUCKET
  )
  buckets.create_bucket(READ_ONLY, server._storage)
  server._api.daemon = True  # Never keeps a finished test process alive.
  server.start()
  return server
