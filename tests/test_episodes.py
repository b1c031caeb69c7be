"""Episode samplers: disjoint support/query, every seen task covered, unseen tasks held out, seeded."""

from __future__ import annotations

import pytest
import torch

from l2sparse.data.episodes import EpisodeSampler, MetaTestSampler
from l2sparse.data.synthetic import ATTRIBUTES, SyntheticScenes
from l2sparse.errors import ConfigError
from l2sparse.tasks import load_registry


@pytest.fixture(scope="module")
def data():
    return SyntheticScenes("train", size=40, image_size=16).tensors()


@pytest.fixture(scope="module")
def seen():
    return load_registry().seen("synthetic-default")


def test_support_and_query_never_share_an_image(data, seen):
    sampler = EpisodeSampler(data, seen, support=8, query=12, meta_batch=4, seed=1)
    for _ in range(10):
        for ep in sampler.sample():
            s, q = set(ep["indices"]["train"].tolist()), set(ep["indices"]["test"].tolist())
            assert len(s) == 8 and len(q) == 12 and not s & q
            assert ep["train"]["image"].shape == (8, 3, 16, 16) and ep["test"]["image"].shape == (12, 3, 16, 16)


def test_batches_follow_the_torchmeta_convention_with_per_task_targets(data, seen):
    ep = EpisodeSampler(data, seen, support=4, query=4, subset=len(seen), seed=0).episode()
    assert ep["tasks"] == [t.name for t in seen]
    assert set(ep["train"]) == {"image", *ep["tasks"]}
    idx = ep["indices"]["train"]
    assert torch.equal(ep["train"]["semseg"], data["semseg"][idx])
    col = ATTRIBUTES.index("warm_light")
    assert torch.equal(ep["train"]["warm_light"], data["attributes"][idx][:, [col]])


def test_every_seen_task_appears_and_unseen_tasks_never_do(data, seen):
    reg = load_registry()
    unseen = {t.name for t in reg.unseen("synthetic-default")}
    sampler = EpisodeSampler(data, seen, support=2, query=2, meta_batch=8, seed=3)
    names = [n for _ in range(10) for ep in sampler.sample() for n in ep["tasks"]]
    assert set(names) == {t.name for t in seen}
    assert not set(names) & unseen
    sizes = {len(ep["tasks"]) for ep in EpisodeSampler(data, seen, 2, 2, subset=2, meta_batch=20).sample()}
    assert sizes == {2}


def test_same_seed_same_episodes_and_resume_from_state(data, seen):
    a = EpisodeSampler(data, seen, support=3, query=3, meta_batch=2, seed=7)
    b = EpisodeSampler(data, seen, support=3, query=3, meta_batch=2, seed=7)
    first = [a.sample() for _ in range(3)]
    assert [[e["tasks"] for e in mb] for mb in first] == [[e["tasks"] for e in b.sample()] for _ in range(3)]
    state = a.state_dict()
    expected = a.sample()
    c = EpisodeSampler(data, seen, support=3, query=3, meta_batch=2, seed=99)
    c.load_state_dict(state)
    got = c.sample()
    for e, g in zip(expected, got, strict=True):
        assert e["tasks"] == g["tasks"] and torch.equal(e["indices"]["test"], g["indices"]["test"])
    other = EpisodeSampler(data, seen, support=3, query=3, meta_batch=2, seed=8).sample()
    assert any(
        not torch.equal(o["indices"]["train"], f["indices"]["train"]) for o, f in zip(other, first[0], strict=True)
    )


def test_meta_test_sampler_gives_each_unseen_task_its_own_images(data):
    unseen = load_registry().unseen("synthetic-default")
    test = SyntheticScenes("test", size=10, image_size=16).tensors()
    sampler = MetaTestSampler(data, test, unseen)
    batch = sampler.task("has_cylinder", shots=5, seed=0)
    assert batch["train"]["image"].shape[0] == 5 and batch["test"]["image"].shape[0] == 10
    assert batch["train"]["has_cylinder"].shape == (5, 1)
    assert torch.equal(sampler.task("has_cylinder", 5, seed=0)["train"]["image"], batch["train"]["image"])
    with pytest.raises(ConfigError, match="shots: 41 asked for but task 'normals' has 40 training images"):
        sampler.task("normals", shots=41)
    with pytest.raises(ConfigError, match="unknown task 'semseg'; unseen tasks: normals"):
        sampler.task("semseg", shots=1)


def test_bad_sampler_options(data, seen):
    with pytest.raises(ConfigError, match="no seen tasks"):
        EpisodeSampler(data, [], 2, 2)
    with pytest.raises(ConfigError, match=r"support \(30\) \+ query \(30\)"):
        EpisodeSampler(data, seen, 30, 30)
    with pytest.raises(ConfigError, match=r"subset must be .all. or an int in 1\.\.6"):
        EpisodeSampler(data, seen, 2, 2, subset=7)
