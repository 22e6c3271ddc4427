"""A client written outside the project (Python grpcio) that ends calls in
every way a client can: it completes them, cancels them in the middle
(`cancel()`, which resets the HTTP/2 stream), and makes handlers, response
streams and interceptors panic.

Usage: endings_client.py FIRST_ID ADDR...; the calls to each server get ids
from FIRST_ID on (the `x-call` metadata the test's server keys its records
by). Prints one line per call, tab-separated: id, kind, scenario, the status
code the client got, the messages it received, the status details. Used by
tests/endings_python.rs; needs `pip install grpcio grpcio-tools`.
"""

import os
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
KINDS = ["unary", "server", "client", "bidi"]


def load_stubs():
    out = tempfile.mkdtemp()
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}", "routeguide.proto"]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)
    import routeguide_pb2
    import routeguide_pb2_grpc

    return routeguide_pb2, routeguide_pb2_grpc


class Client:
    def __init__(self, pb, stub):
        self.pb = pb
        self.stub = stub

    def metadata(self, call_id, what="", panic_in=""):
        metadata = [("x-call", str(call_id))]
        if what:
            metadata.append(("x-do", what))
        if panic_in:
            metadata.append(("x-panic", panic_in))
        return metadata

    def point(self, i):
        return self.pb.Point(latitude=i, longitude=0)

    def note(self, i):
        return self.pb.RouteNote(location=self.point(i), message=f"note {i}")

    def wait_progress(self, call_id, messages):
        """Asks the server (bounded) until the handler of `call_id` has read `messages`."""
        for _ in range(1000):
            asked = [("x-do", "progress"), ("x-of", str(call_id))]
            if int(self.stub.GetFeature(self.point(0), metadata=asked).name or "0") >= messages:
                return
            time.sleep(0.01)
        sys.exit(f"call {call_id} never read {messages} messages")

    def complete(self, kind, call_id, what="", panic_in=""):
        """A complete call of `kind` sending (or asking for) 3 messages: (code, received, details)."""
        metadata = self.metadata(call_id, what, panic_in)
        received = 0
        try:
            if kind == "unary":
                self.stub.GetFeature(self.point(1), metadata=metadata)
                received = 1
            elif kind == "server":
                rect = self.pb.Rectangle(lo=self.point(3))
                for _ in self.stub.ListFeatures(rect, metadata=metadata):
                    received += 1
            elif kind == "client":
                self.stub.RecordRoute((self.point(i) for i in range(3)), metadata=metadata)
                received = 1
            else:
                for _ in self.stub.RouteChat((self.note(i) for i in range(3)), metadata=metadata):
                    received += 1
            return "OK", received, ""
        except grpc.RpcError as error:
            return error.code().name, received, error.details() or ""

    @staticmethod
    def open_upload(make, stop):
        """Two messages, then the stream stays open until `stop` is set."""
        yield make(0)
        yield make(1)
        stop.wait(10)

    def cancel(self, kind, call_id):
        """Starts a call of `kind` and cancels it in its middle: (code, received, details)."""
        stop = threading.Event()
        received = 0
        if kind == "unary":
            call = self.stub.GetFeature.future(self.point(1), metadata=self.metadata(call_id, "hang"))
            self.wait_progress(call_id, 1)
        elif kind == "server":
            call = self.stub.ListFeatures(self.pb.Rectangle(), metadata=self.metadata(call_id, "endless"))
            next(call)
            received = 1
        elif kind == "client":
            call = self.stub.RecordRoute.future(self.open_upload(self.point, stop), metadata=self.metadata(call_id))
            self.wait_progress(call_id, 2)
        else:
            call = self.stub.RouteChat(self.open_upload(self.note, stop), metadata=self.metadata(call_id))
            next(call)
            next(call)
            received = 2
        call.cancel()
        stop.set()
        return call.code().name, received, call.details() or ""

    def past_deadline(self, kind, call_id):
        """A call of `kind` that outlasts its deadline: (code, received, details).

        unary: the handler never answers; client and bidi: the upload stops
        after two messages and stays open, the handler waiting for more (a
        bidi handler has returned its response stream by then: tonic's server
        no longer watches the deadline, grpcio's cancel ends the call).
        """
        stop = threading.Event()
        received = 0
        try:
            if kind == "unary":
                self.stub.GetFeature(self.point(1), metadata=self.metadata(call_id, "hang"), timeout=0.2)
            elif kind == "client":
                upload = self.open_upload(self.point, stop)
                self.stub.RecordRoute(upload, metadata=self.metadata(call_id), timeout=0.3)
            else:
                upload = self.open_upload(self.note, stop)
                for _ in self.stub.RouteChat(upload, metadata=self.metadata(call_id), timeout=0.3):
                    received += 1
            return "OK", received, ""
        except grpc.RpcError as error:
            return error.code().name, received, error.details() or ""
        finally:
            stop.set()


def drive(pb, rpc, addr, first_id):
    lines = []
    call_id = first_id

    def record(kind, scenario, result):
        code, received, details = result
        lines.append(f"{call_id}\t{kind}\t{scenario}\t{code}\t{received}\t{details}")

    with grpc.insecure_channel(addr) as channel:
        client = Client(pb, rpc.RouteGuideStub(channel))
        for kind in KINDS:
            record(kind, "ok", client.complete(kind, call_id))
            call_id += 1
            record(kind, "cancel", client.cancel(kind, call_id))
            call_id += 1
            record(kind, "panic", client.complete(kind, call_id, what="panic"))
            call_id += 1
            record(kind, "on_start", client.complete(kind, call_id, panic_in="on_start"))
            call_id += 1
            if kind in ("server", "bidi"):
                record(kind, "panic-stream", client.complete(kind, call_id, what="panic-stream"))
                call_id += 1
            if kind in ("unary", "client", "bidi"):
                record(kind, "deadline", client.past_deadline(kind, call_id))
                call_id += 1
    return lines, call_id


def main():
    pb, rpc = load_stubs()
    call_id = int(sys.argv[1])
    for addr in sys.argv[2:]:
        lines, call_id = drive(pb, rpc, addr, call_id)
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
