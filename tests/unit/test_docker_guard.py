"""The docker guard's policy (pavedml.tools.docker_guard.check_create and route) as a decision table: the
body docker-py builds for a step container passes; each way out of the container is refused by
its named rule."""

from __future__ import annotations

import copy
import json

import pytest
from docker import APIClient
from docker.types import ContainerConfig, Mount

from pavedml.tools.docker_guard import STEP_LABEL, ContainerRefused, Policy, check_create, parse_body, route

pytestmark = pytest.mark.unit
IMAGE = "pavedml-task:0a1b2c3"
POLICY = Policy(images=(IMAGE,), networks=("pavedml",), mounts=(("pavedml-data", "/var/lib/pavedml"),))


def step_body(**host) -> dict:
    """The create body the docker step runner (pavedml.airflow.docker_step) sends (docker-py's own encoding), round-tripped as JSON."""
    client = APIClient(base_url="unix://var/run/docker.sock", version="1.41")
    mounts = [Mount(target="/var/lib/pavedml", source="pavedml-data", type="volume")]
    host_config = client.create_host_config(**{"network_mode": "pavedml", "mounts": mounts, "privileged": False,
                                               **host})
    config = ContainerConfig("1.41", IMAGE, ["python", "-m", "pavedml", "ingest_raw_batch"],
                             environment={"AWS_SECRET_ACCESS_KEY": "x"}, labels={STEP_LABEL: "ingest_raw_batch"},
                             host_config=host_config)
    return parse_body(json.dumps(config).encode())


def refused(body: dict, policy: Policy = POLICY) -> str:
    with pytest.raises(ContainerRefused) as info:
        check_create(body, policy)
    assert info.value.reason == "docker_guard_refused" and info.value.details["next"]
    return info.value.rule


def with_(path: str, value, body: dict | None = None) -> dict:
    body = copy.deepcopy(body or step_body())
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[leaf] = value
    return body


def test_the_step_container_the_operator_creates_is_allowed():
    check_create(step_body(), POLICY)
    check_create(step_body(network_mode="none", mounts=[]), POLICY)
    check_create(with_("HostConfig.SecurityOpt", ["no-new-privileges"]), POLICY)
    check_create(with_("User", "50000:0"), POLICY)
    # a bind of an allowed host folder (the docker suite's data root) and a zero-valued unknown field
    folder = Policy(images=("pavedml-task:*",), networks=("host",), mounts=(("/srv/data", "/srv/data"),))
    check_create(with_("HostConfig", {"NetworkMode": "host", "Binds": ["/srv/data:/srv/data:rw"],
                                      "KernelMemoryTCP": 0}), folder)


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("HostConfig.Privileged", True, "privileged"),
    ("HostConfig.privileged", True, "privileged"),  # the engine matches field names case-insensitively
    ("HostConfig.CapAdd", ["SYS_ADMIN"], "capabilities"),
    ("HostConfig.Capabilities", ["CAP_SYS_ADMIN"], "capabilities"),
    ("HostConfig.Devices", [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}], "devices"),
    ("HostConfig.DeviceRequests", [{"Count": -1, "Capabilities": [["gpu"]]}], "devices"),
    ("HostConfig.DeviceCgroupRules", ["a *:* rwm"], "devices"),
    ("HostConfig.NetworkMode", "host", "network"),
    ("HostConfig.NetworkMode", "container:abc", "network"),
    ("HostConfig.NetworkMode", "bridge", "network"),
    ("HostConfig.NetworkMode", "", "network"),  # the engine default (bridge)
    ("NetworkingConfig.EndpointsConfig", {"pavedml-docker-api": {}}, "network"),
    ("HostConfig.PidMode", "host", "namespace"),
    ("HostConfig.IpcMode", "host", "namespace"),
    ("HostConfig.UTSMode", "host", "namespace"),
    ("HostConfig.UsernsMode", "host", "namespace"),
    ("HostConfig.CgroupnsMode", "host", "namespace"),
    ("HostConfig.PidMode", "container:abc", "namespace"),
    ("HostConfig.Binds", ["/:/host"], "mounts"),
    ("HostConfig.Binds", ["/var/run/docker.sock:/var/run/docker.sock"], "mounts"),
    ("HostConfig.Binds", ["pavedml-data:/var/lib/pavedml:rshared"], "mounts"),
    ("HostConfig.Mounts", [{"Type": "bind", "Source": "/", "Target": "/host"}], "mounts"),
    ("HostConfig.Mounts", [{"Type": "volume", "Source": "pavedml-data", "Target": "/elsewhere"}], "mounts"),
    ("HostConfig.Mounts", [{"Type": "volume", "Source": "pavedml-data", "Target": "/var/lib/pavedml",
                            "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {
                                "type": "none", "o": "bind", "device": "/"}}}}], "mounts"),
    ("HostConfig.Mounts", [{"Type": "npipe", "Source": "x", "Target": "/x"}], "mounts"),
    ("HostConfig.VolumesFrom", ["docker-socket-proxy"], "mounts"),
    ("HostConfig.VolumeDriver", "local-persist", "mounts"),
    ("Volumes", {"/anon": {}}, "mounts"),
    ("HostConfig.SecurityOpt", ["seccomp=unconfined"], "security"),
    ("HostConfig.SecurityOpt", ["apparmor=unconfined"], "security"),
    ("HostConfig.MaskedPaths", [], "security"),
    ("HostConfig.ReadonlyPaths", [], "security"),
    ("HostConfig.Sysctls", {"kernel.core_pattern": "|/bin/sh"}, "sysctls"),
    ("HostConfig.PortBindings", {"5432/tcp": [{"HostPort": "5432"}]}, "ports"),
    ("HostConfig.PublishAllPorts", True, "ports"),
    ("HostConfig.Runtime", "nvidia", "runtime"),
    ("Runtime", "kata", "runtime"),
    ("HostConfig.CgroupParent", "/", "cgroup"),
    ("HostConfig.OomKillDisable", True, "resources"),
    ("HostConfig.OomScoreAdj", -1000, "resources"),
    ("HostConfig.LogConfig", {"Type": "syslog", "Config": {"syslog-address": "tcp://10.0.0.1:514"}}, "logging"),
    ("HostConfig.RestartPolicy", {"Name": "always"}, "restart"),
    ("HostConfig.Annotations", {"io.kubernetes.cri.x": "y"}, "unknown-field"),
    ("NewTopLevelField", {"x": 1}, "unknown-field"),
    ("User", "root", "user"),
    ("User", "0", "user"),
    ("User", "0:0", "user"),
    ("Labels", {}, "label"),
    ("HostConfig", "privileged", "json"),
    ("HostConfig.OomScoreAdj", "high", "json"),
])
def test_each_way_out_is_refused_by_its_rule(path, value, rule):
    assert refused(with_(path, value)) == rule


@pytest.mark.parametrize("image", [
    "alpine:3.20", "pavedml-task:other", "pavedml-task", "docker.io/library/pavedml-task:0a1b2c3",
    "evil/pavedml-task:0a1b2c3", "pavedml-task@sha256:" + "0" * 64, "sha256:" + "0" * 64, "", None, ["x"],
])
def test_only_the_task_image_is_allowed(image):
    assert refused(with_("Image", image)) == "image"


def test_an_image_pattern_allows_any_tag_of_the_task_image_only():
    tags = Policy(images=("pavedml-task:*",), networks=("pavedml",), mounts=POLICY.mounts)
    check_create(with_("Image", "pavedml-task:0a1b2c3-dirty"), tags)
    assert refused(with_("Image", "pavedml-task-evil:1"), tags) == "image"
    assert refused(with_("Image", "pavedml-task:1/../x"), tags) == "image"


@pytest.mark.parametrize("body", [
    b'{"Image": "pavedml-task:0a1b2c3", "HostConfig": {"Privileged": false, "privileged": true}}',
    b'{"Image": "pavedml-task:0a1b2c3", "image": "alpine:3"}',
    '{"Image": "pavedml-task:0a1b2c3", "HostConfig": {"Bind\u017f": ["/:/host"]}}'.encode(),  # long s: Go folds it
    b'["not", "an", "object"]',
    b'{"Image": ',
    b'\xff\xfe{}',
])
def test_ambiguous_or_malformed_bodies_are_refused(body):
    with pytest.raises(ContainerRefused) as info:
        check_create(parse_body(body), POLICY)
    assert info.value.rule == "json"


def test_the_message_names_the_rule_and_the_value():
    with pytest.raises(ContainerRefused) as info:
        check_create(with_("HostConfig.Binds", ["/:/host"]), POLICY)
    assert "rule mounts" in str(info.value) and "pavedml-data:/var/lib/pavedml" in str(info.value)
    assert info.value.details["evidence"] == ["mounts: '/:/host'"]


@pytest.mark.parametrize(("method", "path", "kind"), [
    ("GET", "/_ping", "forward"), ("HEAD", "/v1.41/_ping", "forward"), ("GET", "/v1.47/version", "forward"),
    ("GET", "/v1.41/images/json", "forward"), ("GET", "/v1.41/images/pavedml-task:0a1b2c3/json", "forward"),
    ("POST", "/v1.41/containers/create", "create"), ("POST", "/containers/create", "create"),
    ("POST", "/v1.41/containers/abc123/start", "step"), ("POST", "/v1.41/containers/abc123/wait", "step"),
    ("GET", "/v1.41/containers/abc123/logs", "step"), ("GET", "/v1.41/containers/abc123/json", "step"),
    ("DELETE", "/v1.41/containers/abc123", "step"), ("POST", "/v1.41/containers/abc123/kill", "step"),
])
def test_the_endpoints_a_step_needs_are_routed(method, path, kind):
    assert route(method, path)[0] == kind


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1.41/containers/abc123/exec"), ("POST", "/v1.41/exec/abc/start"),
    ("POST", "/v1.41/containers/abc123/attach"), ("PUT", "/v1.41/containers/abc123/archive"),
    ("GET", "/v1.41/containers/abc123/archive"), ("POST", "/v1.41/containers/abc123/update"),
    ("GET", "/v1.41/containers/json"), ("POST", "/v1.41/images/create"), ("POST", "/v1.41/build"),
    ("POST", "/v1.41/volumes/create"), ("POST", "/v1.41/networks/create"), ("POST", "/v1.41/plugins/pull"),
    ("POST", "/v1.41/services/create"), ("POST", "/v1.41/swarm/init"), ("GET", "/v1.41/info"),
    ("GET", "/v1.41/events"), ("POST", "/v1.41/session"), ("DELETE", "/v1.41/images/pavedml-task:1"),
    ("POST", "/v1.41/images/pavedml-task:1/tag"), ("POST", "/v1.41/commit"),
    ("POST", "/v1.41/containers/../build"), ("POST", "//containers/create"),
    ("POST", "/v1.41/containers/create/"), ("GET", "/v1.41/images/../../info/json"),
])
def test_every_other_endpoint_is_refused(method, path):
    assert route(method, path) is None


def test_the_step_label_is_the_operators():
    from pavedml.airflow.docker_step import STEP_LABEL as OPERATOR_LABEL

    assert STEP_LABEL == OPERATOR_LABEL
