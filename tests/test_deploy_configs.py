"""The cluster configs: ray_cluster.yaml against the schema Ray ships, the KubeRay RayJob against KubeRay's API."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from jobs.submit import job_stages
from pipeline.config import load_config
from tests.helpers import REPO

LAUNCHER = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
RAYJOB = yaml.safe_load((REPO / "deploy" / "kuberay-rayjob.yaml").read_text())
DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()

# Field names of KubeRay's ray.io/v1 API (json tags of RayJobSpec, RayClusterSpec, HeadGroupSpec and
# WorkerGroupSpec in ray-project/kuberay, ray-operator/apis/ray/v1/rayjob_types.go and raycluster_types.go;
# the CRD's openAPIV3Schema is generated from them). Only these keys are allowed, so a typo fails here
# instead of being dropped by the API server.
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionPolicy", "entrypoint", "runtimeEnvYAML",
               "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
               "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}
SUBMITTER_CONFIG = {"backoffLimit"}
RAYCLUSTER_SPEC = {"suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations", "enableInTreeAutoscaling",
                   "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion", "workerGroupSpecs"}
AUTOSCALER_OPTIONS = {"resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
                      "upscalingMode", "env", "envFrom", "volumeMounts"}
HEAD_GROUP = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                "rayStartParams", "template", "scaleStrategy", "numOfHosts"}


# ---- ray_cluster.yaml -------------------------------------------------------------------------------------
def test_launcher_config_matches_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(LAUNCHER, schema)


def test_launcher_has_a_cpu_head_and_autoscaling_gpu_workers():
    types = LAUNCHER["available_node_types"]
    head = types[LAUNCHER["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker type"
    for name, node in gpu_types.items():
        assert 0 <= node["min_workers"] <= node["max_workers"] <= LAUNCHER["max_workers"], name
        assert re.match(r"(g5|g6|g6e|p4d|p5)\.", node["node_config"]["InstanceType"]), name
        assert "IamInstanceProfile" in node["node_config"], f"{name} has no instance profile for S3"


def test_launcher_installs_seerec_with_vllm_from_the_mounted_repo():
    """With the audio extra too: configs/production-gpu.yaml transcribes, which needs faster-whisper."""
    (mount, source), = LAUNCHER["file_mounts"].items()
    assert source == "."
    install = [c for c in LAUNCHER["setup_commands"] if "pip install" in c and "vllm" in c]
    assert install == [f"cd {mount} && python -m pip install -e '.[vllm,audio]'"]
    assert "pip install --no-cache-dir '.[vllm,audio]'" in DOCKERFILE
    pins = (REPO / "pyproject.toml").read_text()
    assert 'vllm = ["vllm' in pins and 'audio = ["faster-whisper' in pins
    ray_pin = re.search(r'"ray\[[^]]*\]==([\d.]+)"', pins).group(1)
    assert LAUNCHER["docker"]["image"].startswith(f"rayproject/ray:{ray_pin}-py311-")
    assert any("--head" in c and "--dashboard-host=0.0.0.0" in c for c in LAUNCHER["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP:6379" in c for c in LAUNCHER["worker_start_ray_commands"])


# ---- deploy/kuberay-rayjob.yaml ---------------------------------------------------------------------------
def test_rayjob_uses_only_kuberay_fields():
    assert (RAYJOB["apiVersion"], RAYJOB["kind"]) == ("ray.io/v1", "RayJob")
    spec = RAYJOB["spec"]
    _only(spec, RAYJOB_SPEC, "spec")
    _only(spec["submitterConfig"], SUBMITTER_CONFIG, "spec.submitterConfig")
    cluster = spec["rayClusterSpec"]
    _only(cluster, RAYCLUSTER_SPEC, "spec.rayClusterSpec")
    _only(cluster["autoscalerOptions"], AUTOSCALER_OPTIONS, "spec.rayClusterSpec.autoscalerOptions")
    _only(cluster["headGroupSpec"], HEAD_GROUP, "headGroupSpec")
    for group in cluster["workerGroupSpecs"]:
        _only(group, WORKER_GROUP, "workerGroupSpecs[]")
        assert {"groupName", "rayStartParams", "template", "minReplicas", "maxReplicas"} <= group.keys()
    assert spec["submissionMode"] in SUBMISSION_MODES
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert cluster["rayVersion"] == ray.__version__


def test_rayjob_has_a_cpu_head_and_a_gpu_worker_group_with_s3_credentials():
    cluster = RAYJOB["spec"]["rayClusterSpec"]
    head = _container(cluster["headGroupSpec"])
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if "nvidia.com/gpu" in _container(g)["resources"]["limits"]]
    assert gpu_groups
    for group in gpu_groups:
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
    for container in (head, *(_container(g) for g in cluster["workerGroupSpecs"])):
        assert {"secretRef": {"name": "seerec-s3"}} in container["envFrom"]


def test_rayjob_entrypoint_runs_a_real_stage_with_a_valid_repo_config():
    argv = shlex.split(RAYJOB["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs.")
    assert argv[2].removeprefix("jobs.") in job_stages()
    config = Path(argv[argv.index("--config") + 1])
    # The image (deploy/Dockerfile) holds the repository's configs/ under its WORKDIR.
    workdir = Path(re.search(r"^WORKDIR (\S+)$", DOCKERFILE, re.M).group(1))
    assert re.search(r"^COPY .*\bconfigs configs$", DOCKERFILE, re.M)
    in_repo = REPO / config.relative_to(workdir)
    assert in_repo.is_file(), in_repo
    cfg = load_config(in_repo, argv[argv.index("--config") + 2:])
    assert cfg.store.uri.startswith("s3://") and cfg.describe.backend == "vllm"
    worker_limits = [_container(g)["resources"]["limits"] for g in RAYJOB["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    gpus = sum(int(limits.get("nvidia.com/gpu", 0)) * g["maxReplicas"]
               for limits, g in zip(worker_limits, RAYJOB["spec"]["rayClusterSpec"]["workerGroupSpecs"], strict=True))
    stages = {"describe": cfg.describe, "describe_audio": cfg.describe_audio, "transcribe": cfg.transcribe,
              "embed.text": cfg.embed.text, "embed.image": cfg.embed.image, "embed.audio": cfg.embed.audio}
    for name, section in stages.items():  # the stages run one at a time, each on every GPU there is at most
        assert section.concurrency * section.num_gpus <= gpus, f"{name} asks for more GPUs than can exist"
    images = {_container(g)["image"] for g in [RAYJOB["spec"]["rayClusterSpec"]["headGroupSpec"],
                                               *RAYJOB["spec"]["rayClusterSpec"]["workerGroupSpecs"]]}
    assert len(images) == 1 and re.search(rf"^FROM rayproject/ray:{ray.__version__}-py311-gpu$", DOCKERFILE, re.M)


def _only(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = set(mapping) - allowed
    if unknown:
        pytest.fail(f"{where} has fields KubeRay does not define: {sorted(unknown)}")


def _container(group: dict) -> dict:
    (container,) = group["template"]["spec"]["containers"]
    return container
