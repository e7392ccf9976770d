"""`arspine igtl`: an OpenIGTLink server streaming a case to 3D Slicer / SlicerIGT."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from arspine.jsonfile import read_json

HELP = "serve a case to 3D Slicer over OpenIGTLink (transforms, surfaces, plan)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", required=True, metavar="DIR", help="case bundle folder")
    parser.add_argument("--result", metavar="F", help="registration result.json to stream")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=18944, help="TCP port (default 18944)")
    parser.add_argument("--rate", type=float, default=30.0, metavar="HZ",
                        help="transform update rate (default 30)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: run until Ctrl-C)")
    parser.add_argument("--no-plan", action="store_true",
                        help="do not propose and send a screw plan")
    parser.add_argument("--coordinates", choices=("RAS", "LPS"), default="RAS",
                        help="coordinates on the wire (3D Slicer: RAS, the default)")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from arspine.errors import InputError
    from arspine.navigation.igtl import IgtlServer
    from arspine.navigation.session import NavigationSession

    if args.duration is not None and args.duration < 0:
        raise InputError(f"--duration must be >= 0 seconds, got {args.duration}")
    if args.rate <= 0:
        raise InputError(f"--rate must be positive, got {args.rate}")
    session = NavigationSession.from_case(args.case, progress=True)
    if args.result:
        p = Path(args.result)
        d = read_json(p, "--result file")
        rec = session.add_registration(d, inputs={"result": p})
        if rec.status != "ok":
            print(f"arspine igtl: warning: {p} is a rejected registration "
                  f"({d.get('reason')}); its transform is not streamed", file=sys.stderr)
    if not args.no_plan and session.ct is not None and session.labels is not None:
        session.plan_screws(progress=True)  # every plannable level; cut ones are skipped
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"arspine igtl: warning: listening on {args.host}: patient data is reachable "
              f"from the network", file=sys.stderr)
    server = IgtlServer(args.host, args.port, coordinate_system=args.coordinates)
    server.attach(session)
    # Ctrl-C (and a plain `kill`) stop the server cleanly even when the shell that started
    # it left SIGINT ignored (a background job of a non-interactive shell: a CI step).
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:  # Ctrl-C from here on is the normal way to stop
        print(f"arspine igtl: serving '{session.name}' on {args.host}:{server.port} "
              f"({len(session.surfaces)} surfaces, {len(session.plan)} planned screws, "
              f"{args.coordinates}); Ctrl-C to stop", flush=True)
        ticks = server.serve(duration_s=args.duration, rate_hz=args.rate)
    except KeyboardInterrupt:
        ticks = None
    finally:
        server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    print(f"arspine igtl: stopped{'' if ticks is None else f' after {ticks} updates'}; "
          f"{server.n_clients} client connection(s)", flush=True)
    return 0
