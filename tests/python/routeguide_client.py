"""An independent gRPC client (Python grpcio) for the routeguide service.

Calls every method of each server named on the command line with the same
inputs, prints what each answered as JSON, and exits 1 unless all answered
alike. Used by tests/python_client.rs; needs `pip install grpcio grpcio-tools`.
"""

import json
import os
import signal
import sys
import tempfile

import grpc
from grpc_tools import protoc
from google.protobuf.json_format import MessageToDict

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")

# A server that never answers fails the test instead of hanging it.
TIME_LIMIT_S = 50


def load_stubs():
    out = tempfile.mkdtemp()
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}", "routeguide.proto"]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)
    import routeguide_pb2
    import routeguide_pb2_grpc

    return routeguide_pb2, routeguide_pb2_grpc


def drive(pb, rpc, addr):
    answers = {}
    with grpc.insecure_channel(addr) as channel:
        stub = rpc.RouteGuideStub(channel)
        answers["GetFeature"] = [
            MessageToDict(stub.GetFeature(pb.Point(latitude=lat, longitude=lon))) for lat, lon in [(0, 0), (3, 4), (1, 1)]
        ]
        try:
            stub.GetFeature(pb.Point(latitude=-1, longitude=0))
            answers["GetFeature error"] = None
        except grpc.RpcError as error:
            answers["GetFeature error"] = [error.code().name, error.details()]
        rect = pb.Rectangle(lo=pb.Point(latitude=0, longitude=0), hi=pb.Point(latitude=12, longitude=12))
        answers["ListFeatures"] = [MessageToDict(f) for f in stub.ListFeatures(rect)]
        route = (pb.Point(latitude=i, longitude=i % 4) for i in range(20))
        answers["RecordRoute"] = MessageToDict(stub.RecordRoute(route))
        notes = (pb.RouteNote(location=pb.Point(latitude=i % 3, longitude=0), message=f"note {i}") for i in range(10))
        answers["RouteChat"] = [MessageToDict(n) for n in stub.RouteChat(notes)]
    return answers


def give_up(signum, frame):
    sys.exit(f"no answer after {TIME_LIMIT_S} s: a server hangs")


def main():
    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(TIME_LIMIT_S)
    pb, rpc = load_stubs()
    answers = {addr: drive(pb, rpc, addr) for addr in sys.argv[1:]}
    first = next(iter(answers.values()))
    same = all(a == first for a in answers.values())
    sizes = {method: (len(a) if isinstance(a, list) else a) for method, a in first.items()}
    print(json.dumps({"identical": same, "answers": sizes}))
    if not same:
        print(json.dumps(answers, indent=1), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
