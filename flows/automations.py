"""Server-side alerting, versioned here and created by `gpuflows up` / `gpuflows deploy`.

A flow's own hooks cannot report a run that was killed outright (SIGKILL, OOM, a lost node): nothing of it
runs any more. These Prefect automations run in the server instead:

- `gpuflows: run failed` — any flow run that enters Failed, Crashed or TimedOut sends a critical alert
  through the `gpuflows-alert/critical` block (blocks/alert_notification.py: the AlertRoutes channels);
- `gpuflows: zombie runs` — a running flow run whose heartbeats stop (they come every
  `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` s, 30 on the platform) for `GPUFLOWS_ZOMBIE_AFTER_S` (90) is marked
  Crashed, which then alerts as above.

A process worker marks a run whose process was killed Crashed within a second or two; the zombie rule covers
runs whose worker went down with them.
"""

from __future__ import annotations

import os
from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from blocks.alert_notification import GpuflowsAlert

ALERT_BLOCK = "critical"
FAILED_RUNS = "gpuflows: run failed"
ZOMBIE_RUNS = "gpuflows: zombie runs"
HEARTBEAT_S = 30
DEFAULT_ZOMBIE_AFTER_S = 90  # three missed heartbeats

SUBJECT = "Flow run {{ flow_run.state.name | lower }}: {{ flow.name }} / {{ flow_run.name }}"
BODY = (
    "{{ flow.name }} run {{ flow_run.name }} ended {{ flow_run.state.name }}: {{ flow_run.state.message }}\n"
    "{{ flow_run|ui_url }}\n"
    "Flow run id: {{ flow_run.id }}"
)


def alert_block(routes: str = "default") -> GpuflowsAlert:
    """The critical alert block automations notify through, created unless an operator already has one."""
    GpuflowsAlert.register_type_and_schema()
    try:
        return GpuflowsAlert.load(ALERT_BLOCK)
    except ValueError:
        block = GpuflowsAlert(routes=routes, urgency="critical")
        block.save(ALERT_BLOCK)
        return GpuflowsAlert.load(ALERT_BLOCK)


def definitions(block_id: object, zombie_after_s: int) -> list[Automation]:
    return [
        Automation(
            name=FAILED_RUNS,
            description="A critical alert (SMS + IM) for every flow run that fails, crashes or times out.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
        ),
        Automation(
            name=ZOMBIE_RUNS,
            description=f"A running flow run with no heartbeat for {zombie_after_s} s is marked Crashed.",
            trigger=EventTrigger(
                after={"prefect.flow-run.heartbeat"},
                expect={
                    "prefect.flow-run.heartbeat",
                    "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed",
                    "prefect.flow-run.TimedOut",
                },
                match={"prefect.resource.id": "prefect.flow-run.*"},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=zombie_after_s),
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    message=f"no heartbeat for {zombie_after_s} s: its process or node was lost",
                )
            ],
        ),
    ]


def ensure_automations(env: dict[str, str] | None = None) -> list[str]:
    """Creates the automations, or brings existing ones of the same name back to these definitions."""
    env = dict(os.environ) if env is None else env
    zombie_after_s = int(env.get("GPUFLOWS_ZOMBIE_AFTER_S", DEFAULT_ZOMBIE_AFTER_S))
    if zombie_after_s <= HEARTBEAT_S:
        raise ValueError(f"GPUFLOWS_ZOMBIE_AFTER_S must exceed the {HEARTBEAT_S} s heartbeat")
    block = alert_block(env.get("GPUFLOWS_ALERT_ROUTES", "default"))
    done = []
    for wanted in definitions(block._block_document_id, zombie_after_s):
        try:
            existing = Automation.read(name=wanted.name)
        except ValueError:
            wanted.create()
            done.append(f"automation {wanted.name!r} created")
            continue
        existing_fields = existing.model_dump(include={"trigger", "actions", "description", "enabled"})
        wanted_fields = wanted.model_dump(include={"trigger", "actions", "description", "enabled"})
        if existing_fields != wanted_fields:
            wanted.id = existing.id
            wanted.update()
        done.append(f"automation {wanted.name!r}")
    return done
