"""Prefect automations that watch avatarflow's deployments.

A produce run emits one `avatarflow.avatar.failed` event per failed avatar (tasks/batch/monitoring.py),
related to its flow run and deployment. When one flow run of a deployment emits `threshold` of them
within `within_seconds`, the deployment is paused: its schedules stop creating runs (and its
already scheduled runs are removed) until someone resumes it. A batch whose rows keep failing
then stops spending the night on them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Iterator
from uuid import UUID

from prefect.automations import AutomationCore, EventTrigger, PauseDeployment, Posture

from tasks.batch.monitoring import AVATAR_RESOURCE_PREFIX, FAILURE_EVENT

THRESHOLD_ENV = "AVATARFLOW_FAILURE_THRESHOLD"
WINDOW_ENV = "AVATARFLOW_FAILURE_WINDOW_SECONDS"


@dataclass(frozen=True)
class FailureAutomationConfig:
    """When the failure automation pauses a deployment."""

    threshold: int = 3
    """Failed avatars (quarantined manifest rows included) in one flow run that pause its deployment."""

    within_seconds: float = 600.0
    """Window the failures must fall in, in seconds, counted from the first failure of a series."""

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        if self.within_seconds <= 0:
            raise ValueError(f"within_seconds must be > 0, got {self.within_seconds}")

    @classmethod
    def from_environment(cls) -> "FailureAutomationConfig":
        """The defaults, replaced by AVATARFLOW_FAILURE_THRESHOLD and AVATARFLOW_FAILURE_WINDOW_SECONDS where set."""
        defaults = cls()
        return cls(threshold=int(os.environ.get(THRESHOLD_ENV, defaults.threshold)),
                   within_seconds=float(os.environ.get(WINDOW_ENV, defaults.within_seconds)))


def automation_name(deployment_full_name: str) -> str:
    """The automation's name is its identity: applying again updates the automation of that name."""
    return f"avatarflow: pause {deployment_full_name} on avatar failures"


def failure_automation(deployment_id: UUID | str, threshold: int = 3, within_seconds: float = 600.0,
                       deployment_full_name: str | None = None) -> AutomationCore:
    """An automation that pauses the deployment once one of its flow runs emits `threshold`
    avatar-failure events within `within_seconds`. Owned by the deployment, so deleting the
    deployment deletes it."""
    config = FailureAutomationConfig(threshold=threshold, within_seconds=within_seconds)
    deployment_id = UUID(str(deployment_id))
    name = automation_name(deployment_full_name or str(deployment_id))
    return AutomationCore(
        name=name,
        description=(f"Pauses the deployment (its schedules stop) when one flow run reports {config.threshold} "
                     f"failed avatars within {config.within_seconds:g} s. Resume the deployment to schedule again."),
        trigger=EventTrigger(
            expect={FAILURE_EVENT},
            match={"prefect.resource.id": f"{AVATAR_RESOURCE_PREFIX}.*"},
            match_related={"prefect.resource.role": "deployment",
                           "prefect.resource.id": f"prefect.deployment.{deployment_id}"},
            # Counted per flow run: failures spread over several nightly runs do not add up.
            for_each={"related:flow-run:prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=config.threshold,
            within=timedelta(seconds=config.within_seconds),
        ),
        actions=[PauseDeployment(source="selected", deployment_id=deployment_id)],
        owner_resource=f"prefect.deployment.{deployment_id}",
    )


@contextlib.contextmanager
def _api(api_url: str | None) -> Iterator[None]:
    if api_url is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def apply_failure_automations(deployments: Iterable[UUID | str], config: FailureAutomationConfig | None = None,
                              api_url: str | None = None) -> dict[str, UUID]:
    """Create or update one failure automation per deployment; returns {"flow/deployment": automation id}.

    `deployments`: deployment ids, or names as "flow-name/deployment-name". `api_url`: the Prefect
    API to talk to (default: the current PREFECT_API_URL). Idempotent: an automation of the same
    name is updated in place (keeping whether it is enabled), and duplicates of it are removed.
    """
    from prefect.client.orchestration import get_client

    config = config or FailureAutomationConfig()
    applied: dict[str, UUID] = {}
    with _api(api_url), get_client(sync_client=True) as client:
        for reference in deployments:
            try:
                deployment = client.read_deployment(UUID(str(reference)))
            except ValueError:
                deployment = client.read_deployment_by_name(str(reference))
            full_name = f"{client.read_flow(deployment.flow_id).name}/{deployment.name}"
            wanted = failure_automation(deployment.id, config.threshold, config.within_seconds, full_name)
            existing = client.read_automations_by_name(wanted.name)
            if not existing:
                applied[full_name] = client.create_automation(wanted)
                continue
            keep, *duplicates = existing
            # The server rejects owner_resource on update; ownership was set when it was created.
            update = AutomationCore(**wanted.model_dump(exclude={"owner_resource", "enabled"}), enabled=keep.enabled)
            client.update_automation(keep.id, update)
            for duplicate in duplicates:
                client.delete_automation(duplicate.id)
            applied[full_name] = keep.id
    return applied
