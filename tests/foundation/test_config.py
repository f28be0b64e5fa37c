import json
import textwrap

import pytest

from vla.config import Config, ConfigError, build, register


@register
class _Leaf:
    def __init__(self, width: int, depth: int = 1):
        self.width, self.depth = width, depth


@register
class _Tree:
    def __init__(self, leaf, transforms=(), name="tree", **extra):
        self.leaf, self.transforms, self.name, self.extra = leaf, transforms, name, extra


@register
class _Lazy:
    __config_lazy__ = ("inner",)

    def __init__(self, inner):
        self.inner = inner


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_loads_seed_style_python_config(tmp_path):
    path = write(tmp_path, "c.py", """
        model = dict(type='_Tree', leaf=dict(type='_Leaf', width=4),
                     transforms=[dict(type='_Leaf', width=1), dict(type='_Leaf', width=2, depth=3)])
        runner = dict(max_epochs=24, learning_rate=2e-5, active_trackers=('jsonl', 'wandb'))
    """)
    cfg = Config.fromfile(path)
    assert cfg.runner["max_epochs"] == 24
    assert cfg.runner["active_trackers"] == ["jsonl", "wandb"]
    tree = build(cfg.model)
    assert isinstance(tree.leaf, _Leaf) and tree.leaf.width == 4
    assert [t.width for t in tree.transforms] == [1, 2] and tree.transforms[1].depth == 3


def test_type_may_be_a_class_and_lazy_keys_stay_dicts():
    obj = build({"type": _Leaf, "width": 3})
    assert obj.width == 3
    lazy = build({"type": "_Lazy", "inner": {"type": "_Leaf", "width": 1}})
    assert lazy.inner == {"type": "_Leaf", "width": 1}


def test_base_inheritance_and_delete(tmp_path):
    write(tmp_path, "full.py", """
        model = dict(type='_Tree', leaf=dict(type='_Leaf', width=4, depth=2), name='full')
        runner = dict(type='DDP', learning_rate=2e-5, max_epochs=24)
    """)
    lora = write(tmp_path, "lora.py", """
        _base_ = ['./full.py']
        model = dict(name='lora', leaf=dict(width=8))
        runner = dict(_delete_=True, type='FSDP', learning_rate=5e-4)
    """)
    cfg = Config.fromfile(lora)
    assert cfg.model == {"type": "_Tree", "leaf": {"type": "_Leaf", "width": 8, "depth": 2}, "name": "lora"}
    assert cfg.runner == {"type": "FSDP", "learning_rate": 5e-4}


def test_missing_base_and_cycles_are_named(tmp_path):
    bad = write(tmp_path, "bad.py", "_base_ = './nope.py'\n")
    with pytest.raises(ConfigError, match=r"bad\.py: _base_ file './nope.py' not found"):
        Config.fromfile(bad)
    write(tmp_path, "a.py", "_base_ = './b.py'\n")
    b = write(tmp_path, "b.py", "_base_ = './a.py'\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        Config.fromfile(b)


def test_cfg_options_override_nested_keys_and_list_items(tmp_path):
    path = write(tmp_path, "c.py", """
        runner = dict(learning_rate=2e-5, metric=dict(active_trackers=('jsonl',)))
        data = dict(transforms=[dict(type='_Leaf', width=1)])
    """)
    cfg = Config.fromfile(path, cfg_options=["runner.learning_rate=1e-3", "runner.metric.active_trackers=['jsonl']",
                                             "data.transforms.0.width=7"])
    assert cfg.runner["learning_rate"] == 1e-3
    assert cfg.runner["metric"]["active_trackers"] == ["jsonl"]
    assert cfg.data["transforms"][0]["width"] == 7
    # an override cannot create a key the (untyped) dict does not have; a typed dict takes its keywords
    with pytest.raises(ConfigError, match="runner.max_epochs: no key 'max_epochs' to override"):
        Config.fromfile(path, cfg_options=["runner.max_epochs=2"])
    assert Config.fromfile(path, cfg_options=["data.transforms.0.depth=3"]).data["transforms"][0]["depth"] == 3


def test_cfg_option_errors_name_the_path(tmp_path):
    path = write(tmp_path, "c.py", "runner = dict(learning_rate=1)\nitems = [1, 2]\n")
    with pytest.raises(ConfigError, match=r"runer: no key 'runer' to override; did you mean 'runner'\?"):
        Config.fromfile(path, cfg_options=["runer.learning_rate=3"])
    with pytest.raises(ConfigError, match=r"items.5: index 5 out of range for a list of 2"):
        Config.fromfile(path, cfg_options=["items.5=3"])
    with pytest.raises(ConfigError, match="is not of the form key.path=value"):
        Config.fromfile(path, cfg_options=["runner"])


def test_unknown_type_names_file_path_and_closest(tmp_path):
    path = write(tmp_path, "c.py", "model = dict(type='_Tree', leaf=dict(type='_Leef', width=1))\n")
    cfg = Config.fromfile(path)
    with pytest.raises(ConfigError) as err:
        build(cfg.model, source=cfg.filename, path="model")
    assert str(err.value) == f"{path}: model.leaf.type: unknown type '_Leef'; did you mean '_Leaf'?"


def test_unknown_keyword_is_checked_against_the_signature(tmp_path):
    with pytest.raises(ConfigError) as err:
        build({"type": "_Leaf", "width": 1, "dpeth": 2}, source="cfg.py", path="model.leaf")
    assert str(err.value) == "cfg.py: model.leaf.dpeth: unknown keyword 'dpeth' for _Leaf; did you mean 'depth'?"
    # **kwargs accepts anything
    assert build({"type": "_Tree", "leaf": 1, "anything": 2}).extra == {"anything": 2}


def test_missing_required_keyword(tmp_path):
    with pytest.raises(ConfigError) as err:
        build({"type": "_Leaf", "depth": 2}, source="cfg.py", path="model")
    assert str(err.value) == "cfg.py: model.width: missing required keyword 'width' for _Leaf"


def test_dump_json_and_yaml_load_back_equal(tmp_path):
    path = write(tmp_path, "c.py", """
        import math
        model = dict(type='_Tree', leaf=dict(type='_Leaf', width=4), name='x')
        runner = dict(lr=2e-5, trackers=('jsonl', 'wandb'), mask=[True, False], none=None)
        scale = math.pi
    """)
    cfg = Config.fromfile(path)
    json_path, yaml_path = cfg.dump(tmp_path / "work")
    assert json.loads(json_path.read_text())["runner"]["trackers"] == ["jsonl", "wandb"]
    assert Config.fromfile(json_path) == cfg
    assert Config.fromfile(yaml_path) == cfg
    assert not list((tmp_path / "work").glob("*.tmp"))


def test_class_type_dumps_as_registered_name(tmp_path):
    cfg = Config({"model": {"type": _Leaf, "width": 2}})
    cfg.dump(tmp_path)
    back = Config.fromfile(tmp_path / "config.json")
    assert back.model == {"type": "_Leaf", "width": 2}
    assert build(back.model).width == 2


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config.fromfile(tmp_path / "missing.py")
    bad = write(tmp_path, "bad.py", "model = dict(\n")
    with pytest.raises(ConfigError, match=r"bad\.py:\d+: syntax error in config"):
        Config.fromfile(bad)
    badj = write(tmp_path, "bad.json", "{\n  'x': 1}")
    with pytest.raises(ConfigError, match=r"bad\.json:2: invalid JSON"):
        Config.fromfile(badj)
