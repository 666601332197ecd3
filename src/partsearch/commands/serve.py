"""`partsearch serve INDEX_DIR [--host 127.0.0.1] [--port 8000] [--allowed-host NAME] [--api-key KEY]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index_dir", help="an index directory written by `partsearch index`")
    parser.add_argument("--run", default=None, metavar="RUN_DIR",
                        help="the trained run to embed queries with (default: the run the index records; "
                             "give it when the run moved)")
    parser.add_argument("--checkpoint", default="best", help="with --run: best | last | PATH")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME",
        help="a Host name (as in the browser's address bar) to answer besides 127.0.0.1, localhost, ::1 and "
             "--host; repeat for several, '*' for any. Other names are refused (DNS rebinding)",
    )
    parser.add_argument(
        "--api-key", default=None,
        help="enables upload/delete endpoints for requests carrying this key (X-API-Key header)",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from partsearch.search.searcher import open_searcher
    from partsearch.search.service import create_app
    from partsearch.search.service_access import allowed_hosts, listen

    sock = listen(args.host, args.port)
    try:
        hosts = allowed_hosts(args.host, args.allowed_host)
        app = create_app(open_searcher(args.index_dir, args.run, args.checkpoint), api_key=args.api_key,
                         allowed_hosts=hosts)
        searcher = app.state.searcher
        print(f"serving {searcher.root} ({len(searcher)} images) at http://{args.host}:{args.port}/", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
    finally:
        sock.close()
    return 0
