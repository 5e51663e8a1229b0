"""``skypacs``: run and operate the archive from the command line.

Commands only translate arguments into core calls and results into text and exit codes; the logic
lives in ``skypacs.services`` and ``skypacs.embedded``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from skypacs import __version__
from skypacs.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_HTTP_PORT,
    ENV_AE_TITLE,
    ENV_ALLOWED_AES,
    ENV_BUCKET,
    ENV_CATALOG_TABLE,
    ENV_CONFIG,
    ENV_DATA_DIR,
    ENV_DESTINATIONS,
    ENV_DIMSE_PORT,
    ENV_HTTP_PORT,
    ENV_URL_SIGNING_KEY,
    Settings,
    load_settings,
    parse_address,
)
from skypacs.logs import configure_logging

logger = logging.getLogger("skypacs.cli")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        help=f"archive data directory (objects, catalog, index, queue); env {ENV_DATA_DIR}, "
        f"default {DEFAULT_DATA_DIR}",
    )
    parser.add_argument("--config", help=f"TOML configuration file; env {ENV_CONFIG}, default DATA_DIR/skypacs.toml")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-json", action="store_true", help="write logs as JSON lines (for log shippers)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skypacs",
        description="SkyPACS: a DICOM archive. Runs embedded on one machine (filesystem + SQLite) "
        "or on AWS (S3, DynamoDB, Lambda). Every command takes --help.",
    )
    parser.add_argument("--version", action="version", version=f"skypacs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the embedded archive: DIMSE gateway, DICOMweb and indexer",
        description="Run the embedded archive in the foreground: a DIMSE SCP (C-ECHO, C-STORE, C-FIND, "
        "C-MOVE to the [dimse.destinations] of the configuration, C-GET), the "
        "DICOMweb API (QIDO-RS under http://HOST:PORT/dicom-web) and the indexer, storing under the data "
        "directory. Objects queued but not indexed when the last run "
        "stopped are indexed on start. DICOMweb requests need 'Authorization: Bearer TOKEN': a token of "
        "[http.tokens] in the configuration, or else the one made on the first start (printed once) and "
        "kept in DATA_DIR/api-token. SIGTERM or Ctrl-C finishes in-flight stores, drains the "
        "indexer, then exits.",
    )
    _common(serve)
    serve.add_argument("--ae-title", help=f"called AE title to answer as; env {ENV_AE_TITLE}, default SKYPACS")
    serve.add_argument("--dimse-port", type=int, help=f"DIMSE TCP port; env {ENV_DIMSE_PORT}, default 11112")
    serve.add_argument("--dimse-host", help="address to bind the DIMSE port to (default all interfaces)")
    serve.add_argument(
        "--allowed-aes",
        help=f"comma-separated calling AE titles allowed to associate; env {ENV_ALLOWED_AES}; "
        "default: any (logged as a warning)",
    )
    serve.add_argument("--max-pdu", type=int, help="maximum PDU size to receive, bytes (0 = unlimited, default)")
    serve.add_argument(
        "--http-port",
        type=int,
        help=f"DICOMweb HTTP port; env {ENV_HTTP_PORT}, default {DEFAULT_HTTP_PORT} (an ephemeral port if "
        "the default is taken); 0 = ephemeral, -1 = no DICOMweb. Binds [http] host, default 127.0.0.1",
    )

    gateway = commands.add_parser(
        "gateway",
        help="run the DIMSE gateway of an AWS deployment (C-STORE into S3)",
        description="The gateway container's command on AWS: a C-ECHO/C-STORE SCP that writes each "
        f"object to the S3 bucket named by {ENV_BUCKET}; the bucket's notifications feed the indexer "
        f"Lambda. Refused objects are quarantined in the bucket and recorded in the {ENV_CATALOG_TABLE} "
        "table. It also answers C-MOVE (to the destinations of "
        f"{ENV_DESTINATIONS}=AE=host:port,...) and C-GET from the catalog and the bucket, and C-FIND "
        "when SKYPACS_OPENSEARCH_ENDPOINT names the index (PATIENT level retrieves need it too). "
        "Configured from the environment "
        f"({ENV_AE_TITLE}, {ENV_DIMSE_PORT}, {ENV_ALLOWED_AES}, {ENV_DESTINATIONS}, "
        "SKYPACS_MAX_PDU, SKYPACS_EXTRA_SOP_CLASSES). SIGTERM finishes in-flight stores, then exits.",
    )
    gateway.add_argument("--ae-title", help=f"called AE title; env {ENV_AE_TITLE}")
    gateway.add_argument("--dimse-port", type=int, help=f"DIMSE TCP port; env {ENV_DIMSE_PORT}")
    gateway.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    gateway.add_argument("--log-json", action="store_true", default=True, help=argparse.SUPPRESS)

    web = commands.add_parser(
        "dicomweb",
        help="run the DICOMweb streaming service of an AWS deployment (large retrievals)",
        description="The streaming service's container command on AWS: the DICOMweb routes over HTTP on "
        f"S3 and DynamoDB ({ENV_BUCKET}, {ENV_CATALOG_TABLE}), streaming whole studies and series in "
        "bounded memory with no size limit. It serves only URLs signed with the key in "
        f"{ENV_URL_SIGNING_KEY} (at least 32 bytes), which the Lambda DICOMweb API hands out as "
        "303 redirects for answers too large for Lambda. /health answers 200 for the load balancer. "
        "SIGTERM lets requests in flight finish, then exits.",
    )
    web.add_argument("--host", default="0.0.0.0", help="address to bind (default: every interface)")
    web.add_argument("--port", type=int, default=DEFAULT_HTTP_PORT, help=f"TCP port (default {DEFAULT_HTTP_PORT})")
    web.add_argument("--threads", type=int, default=16, help="requests served at once (default 16)")
    web.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    web.add_argument("--log-json", action="store_true", default=True, help=argparse.SUPPRESS)

    imp = commands.add_parser(
        "import",
        help="bulk-load DICOM files and folders",
        description="Store every DICOM file found under PATHs (recursively) in the archive, in "
        "parallel, with a progress bar, then print a summary: stored, replaced, already present, "
        "rejected (with reasons). Refused files stay where they are. Works while 'skypacs serve' runs "
        "on the same data directory. Exit status 1 if any file was rejected or failed.",
    )
    _common(imp)
    imp.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to import")
    imp.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="parallel workers (default: CPUs)")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar (also off when not a terminal)")

    quarantine = commands.add_parser(
        "quarantine",
        help="objects the archive refused, with reasons",
        description="Objects that failed validation are kept under objects/quarantine/, never dropped.",
    )
    quarantine_commands = quarantine.add_subparsers(dest="action", metavar="ACTION", required=True)
    q_list = quarantine_commands.add_parser("list", help="list quarantined objects with their reasons")
    _common(q_list)
    q_list.add_argument("--json", action="store_true", help="one JSON object per line")

    queue = commands.add_parser("queue", help="the ingest queue: status and dead-letter replay")
    queue_commands = queue.add_subparsers(dest="action", metavar="ACTION", required=True)
    q_status = queue_commands.add_parser("status", help="objects waiting to be indexed and dead letters")
    _common(q_status)
    q_replay = queue_commands.add_parser("replay", help="retry every dead-lettered object")
    _common(q_replay)
    return parser


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(data_dir=args.data_dir, config_file=args.config, overrides=overrides)


def _gateway_options(settings: Settings) -> Any:
    from skypacs.dimse.permissions import Permissions
    from skypacs.dimse.server import GatewayOptions
    from skypacs.dimse.tls import server_ssl_context

    return GatewayOptions(
        ae_title=settings.ae_title,
        host=settings.dimse_host,
        port=settings.dimse_port,
        allowed_aes=settings.allowed_aes,
        max_pdu=settings.max_pdu,
        extra_sop_classes=settings.extra_sop_classes,
        destinations={title: parse_address(address) for title, address in settings.destinations.items()},
        permissions=Permissions.from_config(settings.dimse_permissions),
        ssl_context=(
            server_ssl_context(settings.tls_certificate, settings.tls_private_key, settings.tls_ca)
            if settings.tls_certificate is not None and settings.tls_private_key is not None else None
        ),
    )


def _stop_on_signals() -> threading.Event:
    stopping = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        logger.info("received %s: finishing in-flight stores", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stopping


def cmd_gateway(args: argparse.Namespace) -> int:
    """The AWS gateway task: C-STORE into S3 (the indexer Lambda takes it from there), C-MOVE/C-GET
    from the catalog and the bucket."""
    from skypacs.aws import archive

    settings = load_settings(environ=os.environ, overrides={"ae_title": args.ae_title, "dimse_port": args.dimse_port})
    gateway = archive().gateway(_gateway_options(settings))
    stopping = _stop_on_signals()
    gateway.start()
    print(f"SkyPACS gateway: DIMSE listening as {settings.ae_title} on port {gateway.port}", flush=True)
    stopping.wait()
    gateway.stop()
    return EXIT_OK


def cmd_dicomweb(args: argparse.Namespace) -> int:
    """The AWS streaming service: signed WADO-RS retrievals of any size, streamed from S3."""
    from skypacs.aws import archive
    from skypacs.dicomweb.server import streaming_server

    current = archive()
    key = current.url_signing_key
    if key is None:
        raise ValueError(f"{ENV_URL_SIGNING_KEY} is not set: the streaming service serves signed URLs only")
    server = streaming_server(current, key, host=args.host, port=args.port, threads=args.threads)
    stopping = _stop_on_signals()
    server.start()
    print(f"SkyPACS DICOMweb streaming service at {server.url}", flush=True)
    stopping.wait()
    server.stop()
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from skypacs.dimse.retrieve import RetrieveSources
    from skypacs.dimse.server import Gateway
    from skypacs.embedded import EmbeddedArchive, start_indexer_process

    allowed = None
    if args.allowed_aes is not None:
        allowed = frozenset(a.strip() for a in args.allowed_aes.split(",") if a.strip())
    settings = _settings(
        args,
        ae_title=args.ae_title,
        dimse_port=args.dimse_port,
        dimse_host=args.dimse_host,
        allowed_aes=allowed,
        max_pdu=args.max_pdu,
        http_port=args.http_port if args.http_port is None or args.http_port >= 0 else None,
    )
    serve_http = args.http_port is None or args.http_port >= 0
    new_token, token_source = None, "tokens of the configuration"
    if serve_http and not settings.http_tokens:
        from skypacs.dicomweb.auth import API_TOKEN_FILE, load_or_create_token

        token_file = settings.data_dir / API_TOKEN_FILE
        token, created = load_or_create_token(token_file)
        settings = replace(settings, http_tokens={token: "write"})
        new_token, token_source = (token if created else None), f"token in {token_file}"
    archive = EmbeddedArchive(settings)
    removed = archive.store.remove_stale_temporaries()
    if removed:
        logger.info("removed %d partial writes left by an earlier crash (never acknowledged)", removed)
    indexer, stop_indexer = start_indexer_process(settings, log_level=args.log_level, json_logs=args.log_json)
    gateway = Gateway(
        _gateway_options(settings),
        archive.store_service,
        query_service=archive.query_service,
        retrieve_sources=RetrieveSources(archive.catalog, archive.store, query_service=archive.query_service),
    )
    stopping = _stop_on_signals()
    try:
        gateway.start()
    except OSError as exc:
        stop_indexer.set()
        indexer.join()
        print(f"skypacs: cannot listen on port {settings.dimse_port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURES
    http = None
    if serve_http:
        from skypacs.dicomweb.server import start_embedded_server

        try:
            asked = args.http_port is not None or bool(os.environ.get(ENV_HTTP_PORT))
            port_is_default = not asked and settings.http_port == DEFAULT_HTTP_PORT
            http = start_embedded_server(archive, port_is_default=port_is_default)
        except OSError as exc:
            gateway.stop()
            stop_indexer.set()
            indexer.join()
            print(f"skypacs: cannot listen on HTTP port {settings.http_port}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILURES
    if http is not None and new_token is not None:
        # Shown this once: later starts read it from the file silently.
        print(f"SkyPACS made a DICOMweb API token with write access (saved, owner-only, in "
              f"{settings.data_dir / API_TOKEN_FILE}; set [http.tokens] to use your own):\n  {new_token}\n"
              f"Use it as: curl -H \"Authorization: Bearer {new_token}\" {http.url}/studies", flush=True)
    print(
        f"SkyPACS serving {settings.data_dir}: DIMSE listening as {settings.ae_title} on port {gateway.port}"
        + (f", DICOMweb at {http.url} (bearer {token_source})" if http is not None else ", DICOMweb off"),
        flush=True,
    )
    while not stopping.wait(1.0):
        if not indexer.is_alive():
            logger.error("indexer process exited with %s; restarting it", indexer.exitcode)
            indexer, stop_indexer = start_indexer_process(
                settings, log_level=args.log_level, json_logs=args.log_json
            )
    if http is not None:
        http.stop()
    gateway.stop()
    stop_indexer.set()
    indexer.join()
    logger.info("stopped; %d objects still queued for indexing", archive.queue.counts().pending)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from skypacs.services.bulk_import import find_files, import_paths

    settings = _settings(args)
    try:
        files = list(find_files(args.paths))
    except FileNotFoundError as exc:
        print(f"skypacs import: {exc}", file=sys.stderr)
        return EXIT_USAGE
    disable = args.no_progress or not sys.stderr.isatty()
    with tqdm(total=len(files), unit="file", desc="importing", disable=disable) as progress:
        summary = import_paths(files, settings, jobs=max(1, args.jobs), on_result=lambda _r: progress.update())
    counts = summary.counts
    print(
        f"{len(files)} files: {counts['stored']} stored, {counts['replaced']} replaced, "
        f"{counts['already present']} already present, {counts['rejected']} rejected, {counts['failed']} failed"
    )
    for result in summary.rejected:
        print(f"  {result.outcome} {result.path}: {result.reason}: {result.message}")
    return EXIT_OK if summary.ok else EXIT_FAILURES


def cmd_quarantine(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from skypacs.embedded import EmbeddedArchive

    records = EmbeddedArchive(_settings(args)).catalog.list_quarantine()
    if args.json:
        for record in records:
            print(json.dumps(asdict(record)))
        return EXIT_OK
    if not records:
        print("quarantine is empty")
        return EXIT_OK
    for record in records:
        print(f"{record.quarantined_at}  {record.reason:<22} {record.original_key}")
        print(f"    kept at objects/{record.quarantine_key} ({record.size} bytes): {record.message}")
    print(f"{len(records)} quarantined objects")
    return EXIT_OK


def cmd_queue(args: argparse.Namespace) -> int:
    from skypacs.embedded import EmbeddedArchive

    queue = EmbeddedArchive(_settings(args)).queue
    if args.action == "replay":
        print(f"{queue.replay_dead()} dead-lettered objects queued again")
        return EXIT_OK
    counts = queue.counts()
    print(f"{counts.pending} waiting to be indexed, {counts.dead} dead-lettered")
    for key, error in queue.dead_entries():
        print(f"  dead: {key}: {error}")
    return EXIT_OK


COMMANDS = {"gateway": cmd_gateway, "dicomweb": cmd_dicomweb, "serve": cmd_serve, "import": cmd_import, "quarantine": cmd_quarantine, "queue": cmd_queue}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(level=args.log_level, json_format=args.log_json)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"skypacs {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
