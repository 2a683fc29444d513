"""Which of a row's stages share one task run."""

from flows.windows import AvatarStages, LOW_PRIORITY, chain_stages
from tasks.common.rows import AvatarRow


def _names(chains):
    return [[stage.name for stage in chain] for chain in chains]


def test_consecutive_stages_with_the_same_resources_and_priority_share_a_task_run():
    stages = AvatarStages(AvatarRow(id="a", line=1, portrait="p.png", text="Hi."))
    ingested = stages.add("ingest", None)
    face = stages.add("generate", None, ingested, gpu=True)
    rig = stages.add("reconstruct", None, face)
    motion = stages.add("animate", None, ingested)
    rendered = stages.add("render", None, rig, motion)
    stages.add("export", None, rig, rendered, priority=LOW_PRIORITY)
    # A GPU stage and a low-priority one each break the chain; the CPU stages between them run together.
    assert _names(chain_stages(stages.stages)) == [["ingest"], ["generate"], ["reconstruct", "animate", "render"],
                                                   ["export"]]


def test_the_photo_presets_stages_make_two_task_runs():
    stages = AvatarStages(AvatarRow(id="a", line=1, portrait="p.png", text="Hi."))
    ingested = stages.add("ingest", None)
    rig = stages.add("reconstruct", None, ingested)
    rendered = stages.add("render", None, rig, stages.add("animate", None, ingested))
    stages.add("export", None, rig, rendered, priority=LOW_PRIORITY)
    assert _names(chain_stages(stages.stages)) == [["ingest", "reconstruct", "animate", "render"], ["export"]]
