"""The worker's only path to the Docker engine: a small HTTP proxy that forwards the few Docker API
calls a step container needs and refuses everything else, naming the rule.

    python -m pavedml.tools.docker_guard --listen 0.0.0.0:2375 --engine unix:///var/run/docker.sock \\
        --image 'pavedml-task:<commit>' --network pavedml --mount pavedml-data:/var/lib/pavedml

Allowed (any ``/v1.NN`` prefix): ``GET|HEAD /_ping``, ``GET /version``, ``GET /images/json``,
``GET /images/<ref>/json``, ``POST /containers/create`` (checked by :func:`check_create`), and on
a container carrying the step label (``org.pavedml.step``, which create requires) only:
``POST start|wait|stop|kill``, ``GET json|logs``, ``DELETE``. So no exec, attach, archive, build,
pull, volume, network, plugin, swarm or system call, and no reading another container's
environment or logs.

A created container must be: an allowed image (``--image``, exact or ``fnmatch`` pattern of
``name:tag``, never a registry path or digest); not privileged; no added capabilities, devices,
sysctls, published ports, runtime, cgroup parent, ``VolumesFrom``, volume driver or anonymous
volume; no host (or other container's) network, pid, ipc, uts, user or cgroup namespace; only
the allowed networks (``--network``, plus ``none``); only the allowed mounts (``--mount
source:target``: a named volume or host folder at one path, no driver options); security options
``no-new-privileges`` only; the image's user or a non-root numeric uid. A field the guard does not
know is refused unless it holds its zero value. The body is parsed strictly (keys are matched
case-insensitively as the engine does; duplicate or non-ASCII keys are refused) and what was
checked is what is forwarded (re-serialized).

A refusal is HTTP 403 with ``{"message": "pavedml docker guard refused ...: rule <rule>: ..."}``,
which docker-py raises as ``APIError`` (the task log shows it). Standard library only.
"""

from __future__ import annotations

import argparse
import fnmatch
import http.client
import json
import logging
import re
import select
import socket
import socketserver
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from pavedml.errors import PavedMLError

log = logging.getLogger("pavedml.tools.docker_guard")  # also under python -m

#: Label every step container carries (= pavedml.airflow.docker_step.STEP_LABEL, which imports Airflow).
STEP_LABEL = "org.pavedml.step"
MAX_BODY = 4 * 1024 * 1024
_VERSION = r"(?P<version>/v\d{1,2}\.\d{1,3})?"
_ID = r"(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
_IMAGE_REF = r"(?P<ref>[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,254})"
#: (methods, path pattern, kind): "forward" as is, "create" checked, "step" only on a step container.
ROUTES = [
    ({"GET", "HEAD"}, re.compile(_VERSION + r"/_ping"), "forward"),
    ({"GET"}, re.compile(_VERSION + r"/version"), "forward"),
    ({"GET"}, re.compile(_VERSION + r"/images/json"), "forward"),
    ({"GET"}, re.compile(_VERSION + r"/images/" + _IMAGE_REF + r"/json"), "forward"),
    ({"POST"}, re.compile(_VERSION + r"/containers/create"), "create"),
    ({"POST"}, re.compile(_VERSION + r"/containers/" + _ID + r"/(?P<op>start|wait|stop|kill)"), "step"),
    ({"GET"}, re.compile(_VERSION + r"/containers/" + _ID + r"/(?P<op>json|logs)"), "step"),
    ({"DELETE"}, re.compile(_VERSION + r"/containers/" + _ID), "step"),
]
_QUERY = re.compile(r"[A-Za-z0-9_.~%&=+,:-]*")
_IMAGE_NAME_TAG = re.compile(r"[a-z0-9][a-z0-9._-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

#: Config fields that cannot reach the host (the checked ones are handled apart).
_SAFE_CONFIG = {"hostname", "domainname", "attachstdin", "attachstdout", "attachstderr", "tty", "openstdin",
                "stdinonce", "env", "cmd", "healthcheck", "argsescaped", "workingdir", "entrypoint",
                "networkdisabled", "macaddress", "onbuild", "stopsignal", "stoptimeout", "shell", "exposedports"}
_CHECKED_CONFIG = {"image", "user", "labels", "volumes", "hostconfig", "networkingconfig", "runtime"}
#: HostConfig fields that cannot reach the host beyond the container's own resources.
_SAFE_HOST = {"capdrop", "dns", "dnsoptions", "dnssearch", "extrahosts", "init", "readonlyrootfs", "tmpfs",
              "ulimits", "memory", "memoryswap", "memoryreservation", "memoryswappiness", "nanocpus",
              "cpushares", "cpuperiod", "cpuquota", "cpusetcpus", "cpusetmems", "pidslimit", "shmsize",
              "autoremove", "groupadd", "links", "consolesize", "isolation", "blkioweight", "containeridfile"}
_CHECKED_HOST = {"privileged", "capadd", "capabilities", "devices", "devicerequests", "devicecgrouprules",
                 "networkmode", "pidmode", "ipcmode", "utsmode", "usernsmode", "cgroupnsmode", "binds",
                 "mounts", "volumesfrom", "volumedriver", "securityopt", "maskedpaths", "readonlypaths",
                 "sysctls", "portbindings", "publishallports", "runtime", "cgroupparent", "cgroup",
                 "oomkilldisable", "oomscoreadj", "logconfig", "restartpolicy"}
#: Namespace modes: the values allowed (anything else, "host" and "container:<id>" included, is refused).
_NAMESPACES = {"pidmode": {""}, "ipcmode": {"", "private", "none", "shareable"}, "utsmode": {""},
               "usernsmode": {""}, "cgroupnsmode": {"", "private"}}
_BIND_OPTIONS = {"ro", "rw", "nocopy"}


class ContainerRefused(PavedMLError):
    """A Docker API call the guard does not forward; ``rule`` names the policy it breaks."""

    reason = "docker_guard_refused"

    def __init__(self, rule: str, message: str, value=None):
        super().__init__(f"rule {rule}: {message}", details={
            "evidence": [] if value is None else [f"{rule}: {value!r}"],
            "next": "step containers run only the pavedml task image, unprivileged, with the data volume "
                    "(pavedml.tools.docker_guard); run anything else on the host yourself"})
        self.rule = rule


@dataclass(frozen=True)
class Policy:
    """What a step container may be. ``images``: fnmatch patterns of ``name:tag``; ``networks``:
    network names (``none`` is always allowed); ``mounts``: (source, target) pairs."""

    images: tuple[str, ...]
    networks: tuple[str, ...] = ()
    mounts: tuple[tuple[str, str], ...] = ()


# ------------------------------------------------------------------------------ the policy (pure)


def _strict_object(pairs: list[tuple[str, object]]) -> dict:
    """JSON object hook: the engine (Go) matches field names case-insensitively, so two keys
    differing only in case would let one value be checked and the other used."""
    out, seen = {}, set()
    for key, value in pairs:
        if not key.isascii():
            raise ContainerRefused("json", f"non-ASCII key {key!r}")
        if key.lower() in seen:
            raise ContainerRefused("json", f"duplicate key {key!r} (keys are case-insensitive)")
        seen.add(key.lower())
        out[key] = value
    return out


def parse_body(body: bytes) -> dict:
    try:
        parsed = json.loads(body.decode("utf-8"), object_pairs_hook=_strict_object)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ContainerRefused("json", f"the body is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ContainerRefused("json", "the body is not a JSON object")
    return parsed


def _get(obj: dict | None, name: str):
    """Field ``name`` of a Docker API object, matched case-insensitively (as the engine does)."""
    if not isinstance(obj, dict):
        return None
    for key, value in obj.items():
        if key.lower() == name:
            return value
    return None


def _empty(value) -> bool:
    return value in (None, False, 0, "", [], {})


def _unknown(obj: dict, known: Iterable[str], where: str) -> None:
    for key, value in obj.items():
        if key.lower() not in known and not _empty(value):
            raise ContainerRefused("unknown-field", f"{where}{key} is not a field the guard knows", value)


def image_allowed(image, patterns: Iterable[str]) -> bool:
    """``name:tag`` without registry, path or digest, matching one pattern."""
    if not isinstance(image, str) or not _IMAGE_NAME_TAG.fullmatch(image):
        return False
    return any(fnmatch.fnmatchcase(image, p) for p in patterns)


def _check_mount(source, target, policy: Policy, shown) -> None:
    if (source, target) not in policy.mounts:
        allowed = ", ".join(f"{s}:{t}" for s, t in policy.mounts) or "none"
        raise ContainerRefused("mounts", f"only the data volume may be mounted ({allowed})", shown)


def _check_host_config(host: dict, policy: Policy) -> None:
    if not isinstance(host, dict):
        raise ContainerRefused("json", "HostConfig is not an object")
    _unknown(host, _SAFE_HOST | _CHECKED_HOST, "HostConfig.")
    if not _empty(_get(host, "privileged")):
        raise ContainerRefused("privileged", "privileged containers are refused", True)
    for name in ("capadd", "capabilities"):
        if not _empty(_get(host, name)):
            raise ContainerRefused("capabilities", "no capability may be added", _get(host, name))
    for name in ("devices", "devicerequests", "devicecgrouprules"):
        if not _empty(_get(host, name)):
            raise ContainerRefused("devices", "no host device may be given", _get(host, name))
    network = _get(host, "networkmode") or ""
    if network not in (*policy.networks, "none"):
        raise ContainerRefused("network", f"network {network or '(engine default)'!r} is not allowed "
                               f"(allowed: {', '.join((*policy.networks, 'none'))})", network)
    for name, allowed in _NAMESPACES.items():
        value = _get(host, name) or ""
        if value not in allowed:
            raise ContainerRefused("namespace", f"HostConfig {name} {value!r}: no host or shared namespace", value)
    for bind in _get(host, "binds") or []:
        parts = bind.split(":") if isinstance(bind, str) else []
        if len(parts) not in (2, 3) or (len(parts) == 3 and not set(parts[2].split(",")) <= _BIND_OPTIONS):
            raise ContainerRefused("mounts", "a bind must be source:target[:ro|rw|nocopy]", bind)
        _check_mount(parts[0], parts[1], policy, bind)
    for mount in _get(host, "mounts") or []:
        if not isinstance(mount, dict):
            raise ContainerRefused("json", "a mount is not an object", mount)
        kind = _get(mount, "type") or "volume"
        if kind == "tmpfs" and _empty(_get(mount, "source")):
            continue
        if kind not in ("volume", "bind"):
            raise ContainerRefused("mounts", f"mount type {kind!r} is not allowed", mount)
        options = _get(mount, "volumeoptions") or {}
        if not _empty(_get(mount, "bindoptions")) or not _empty(_get(options, "driverconfig")) \
                or not _empty(_get(options, "subpath")):
            raise ContainerRefused("mounts", "no bind options, volume driver or subpath", mount)
        _check_mount(_get(mount, "source"), _get(mount, "target"), policy, mount)
    for name in ("volumesfrom", "volumedriver"):
        if not _empty(_get(host, name)):
            raise ContainerRefused("mounts", f"HostConfig {name} is refused (another container's or a driver's "
                                   "volumes)", _get(host, name))
    for opt in _get(host, "securityopt") or []:
        if opt not in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            raise ContainerRefused("security", "only no-new-privileges may be set", opt)
    for name in ("maskedpaths", "readonlypaths"):
        if _get(host, name) is not None:
            raise ContainerRefused("security", f"HostConfig {name} may not be changed (unmasks /proc)", _get(host, name))
    if not _empty(_get(host, "sysctls")):
        raise ContainerRefused("sysctls", "no sysctl may be set", _get(host, "sysctls"))
    for name in ("portbindings", "publishallports"):
        if not _empty(_get(host, name)):
            raise ContainerRefused("ports", "no port may be published on the host", _get(host, name))
    if (_get(host, "runtime") or "runc") != "runc":
        raise ContainerRefused("runtime", "only the default runtime", _get(host, "runtime"))
    for name in ("cgroupparent", "cgroup"):
        if not _empty(_get(host, name)):
            raise ContainerRefused("cgroup", f"HostConfig {name} may not be set", _get(host, name))
    if not _empty(_get(host, "oomkilldisable")) or (_get(host, "oomscoreadj") or 0) < 0:
        raise ContainerRefused("resources", "the OOM killer may not spare the step container",
                               [_get(host, "oomkilldisable"), _get(host, "oomscoreadj")])
    driver = _get(_get(host, "logconfig"), "type") or ""
    if driver not in ("", "json-file", "local"):
        raise ContainerRefused("logging", "only the json-file or local log driver (no log shipping)", driver)
    restart = _get(_get(host, "restartpolicy"), "name") or ""
    if restart not in ("", "no"):
        raise ContainerRefused("restart", "a step container is never restarted by the engine", restart)


def check_create(body: dict, policy: Policy) -> None:
    """Raise :class:`ContainerRefused` unless ``body`` (a ``POST /containers/create`` JSON body,
    parsed by :func:`parse_body`) creates a container ``policy`` allows."""
    try:
        _check_create(body, policy)
    except (TypeError, AttributeError) as exc:  # a field of the wrong JSON type
        raise ContainerRefused("json", f"a field has the wrong type: {exc}") from None


def _check_create(body: dict, policy: Policy) -> None:
    _unknown(body, _SAFE_CONFIG | _CHECKED_CONFIG, "")
    image = _get(body, "image")
    if not image_allowed(image, policy.images):
        raise ContainerRefused("image", f"image {image!r} is not allowed (allowed: {', '.join(policy.images)})", image)
    labels = _get(body, "labels")
    if not isinstance(labels, dict) or not isinstance(labels.get(STEP_LABEL), str) or not labels[STEP_LABEL]:
        raise ContainerRefused("label", f"a step container carries the label {STEP_LABEL}", labels)
    user = _get(body, "user") or ""
    if user and not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", str(user)):
        raise ContainerRefused("user", "the image's user or a non-root numeric uid[:gid]", user)
    if not _empty(_get(body, "volumes")):
        raise ContainerRefused("mounts", "no anonymous volume", _get(body, "volumes"))
    if (_get(body, "runtime") or "runc") != "runc":
        raise ContainerRefused("runtime", "only the default runtime", _get(body, "runtime"))
    _check_host_config(_get(body, "hostconfig") or {}, policy)
    endpoints = _get(_get(body, "networkingconfig"), "endpointsconfig") or {}
    if not isinstance(endpoints, dict):
        raise ContainerRefused("json", "NetworkingConfig.EndpointsConfig is not an object")
    for network in endpoints:
        if network not in (*policy.networks, "none"):
            raise ContainerRefused("network", f"network {network!r} is not allowed", network)


def route(method: str, path: str) -> tuple[str, re.Match] | None:
    """(kind, match) of an allowed endpoint, else None."""
    for methods, pattern, kind in ROUTES:
        match = pattern.fullmatch(path)
        if match and method in methods and ".." not in path:
            return kind, match
    return None


# ------------------------------------------------------------------------------ the proxy


class Engine:
    """Where the Docker engine listens: ``unix:///path`` or ``tcp://host:port``."""

    def __init__(self, url: str):
        self.url = url
        self.unix: str | None = None
        self.address: tuple[str, int] | None = None
        if url.startswith("unix://"):
            self.unix = "/" + url.removeprefix("unix://").lstrip("/")
        elif url.startswith("tcp://"):
            host, _, port = url.removeprefix("tcp://").rpartition(":")
            self.unix, self.address = None, (host, int(port))
        else:
            raise ValueError(f"engine URL {url!r}: unix:///path or tcp://host:port")

    def connect(self, timeout: float | None = None) -> socket.socket:
        if self.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.unix)
            return sock
        assert self.address is not None  # set by __init__ for tcp://
        return socket.create_connection(self.address, timeout=timeout)

    def inspect(self, version: str, container: str) -> tuple[int, bytes]:
        """GET <version>/containers/<id>/json: (status, body)."""
        conn = http.client.HTTPConnection("docker", timeout=30)
        conn.sock = self.connect(30)
        try:
            conn.request("GET", f"{version}/containers/{container}/json", headers={"Host": "docker"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


class GuardHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pavedml-docker-guard"
    server: GuardServer

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.guard()

    do_HEAD = do_POST = do_DELETE = do_PUT = do_PATCH = do_GET  # noqa: N815

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        log.debug("%s " + format, self.client_address[0], *args)

    def refuse(self, status: int, rule: str, message: str) -> None:
        text = f"pavedml docker guard refused {self.command} {self.path.split('?')[0]}: {message}"
        log.warning("%s (from %s)", text, self.client_address[0])
        body = json.dumps({"message": text, "rule": rule}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            if self.headers.get("Content-Length") or self.headers["Transfer-Encoding"].lower() != "chunked":
                raise ContainerRefused("http", "Transfer-Encoding other than chunked, or with Content-Length")
            out = b""
            while True:
                size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(8)
                if len(out) > MAX_BODY:
                    raise ContainerRefused("http", f"body over {MAX_BODY} bytes")
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ContainerRefused("http", f"body over {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def guard(self) -> None:
        self.close_connection = True
        path, _, query = self.path.partition("?")
        try:
            body = self.read_body()
            found = route(self.command, path)
            if found is None or not _QUERY.fullmatch(query):
                raise ContainerRefused("endpoint", "not an endpoint a step container needs")
            kind, match = found
            if kind == "create":
                parsed = parse_body(body)
                check_create(parsed, self.server.policy)
                body = json.dumps(parsed).encode()
                log.info("creating a step container of %s", _get(parsed, "image"))
            elif kind == "step":
                if body.strip() not in (b"", b"{}", b"null"):
                    raise ContainerRefused("http", "this call takes no body")
                status, found_body = self.server.engine.inspect(match["version"] or "", match["id"])
                if status != 200:
                    return self.relay_status(status, found_body)
                inspected = json.loads(found_body)
                labels = (inspected.get("Config") or {}).get("Labels") or {}
                if STEP_LABEL not in labels:
                    raise ContainerRefused("step-container", f"container {match['id']!r} is not a step container "
                                           f"(no label {STEP_LABEL})")
                start, end = match.span("id")
                path = path[:start] + inspected["Id"] + path[end:]  # the very container that was checked
            elif body:
                raise ContainerRefused("http", "this call takes no body")
        except ContainerRefused as exc:
            return self.refuse(403, exc.rule, exc.message)
        self.forward(path + ("?" + query if query else ""), body)

    def relay_status(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def forward(self, target: str, body: bytes) -> None:
        """Send one request of our own making to the engine and relay its response byte for byte
        (streams such as logs and wait included) until the engine or the client closes."""
        head = [f"{self.command} {target} HTTP/1.1", "Host: docker", "Connection: close",
                f"User-Agent: {self.headers.get('User-Agent', 'pavedml-docker-guard')}"]
        if body or self.command in ("POST", "PUT", "PATCH"):
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        upstream = self.server.engine.connect()
        try:
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            self.wfile.flush()
            client = self.connection
            while True:
                ready, _, _ = select.select([upstream, client], [], [])
                if upstream in ready:
                    chunk = upstream.recv(65536)
                    if not chunk:
                        return
                    client.sendall(chunk)
                if client in ready and not client.recv(65536):
                    return  # the client went away (task killed): stop following; other bytes are dropped
        except OSError as exc:
            log.info("relay of %s %s ended: %s", self.command, target, exc)
        finally:
            upstream.close()


class GuardServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], policy: Policy, engine: Engine):
        self.policy, self.engine = policy, engine
        super().__init__(address, GuardHandler)


def parse_mount(text: str) -> tuple[str, str]:
    source, sep, target = text.rpartition(":")
    if not sep or not source or not target.startswith("/"):
        raise argparse.ArgumentTypeError(f"--mount {text!r}: SOURCE:/target")
    return source, target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pavedml.tools.docker_guard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:2375", help="host:port to serve (default 127.0.0.1:2375)")
    parser.add_argument("--engine", default="unix:///var/run/docker.sock", help="the Docker engine's URL")
    parser.add_argument("--image", action="append", required=True, help="allowed image name:tag (fnmatch), repeatable")
    parser.add_argument("--network", action="append", default=[], help="allowed network, repeatable (none always)")
    parser.add_argument("--mount", action="append", default=[], type=parse_mount,
                        help="allowed mount SOURCE:/target (a named volume or host folder), repeatable")
    parser.add_argument("--log-level", default="INFO")
    return parser


def policy_of(args: argparse.Namespace) -> Policy:
    return Policy(images=tuple(args.image), networks=tuple(args.network), mounts=tuple(args.mount))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    policy = policy_of(args)
    host, _, port = args.listen.rpartition(":")
    server = GuardServer((host, int(port)), policy, Engine(args.engine))
    log.info("docker guard on %s -> %s; %s", args.listen, args.engine, policy)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
