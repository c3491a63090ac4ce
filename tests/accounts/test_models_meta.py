"""Static model metadata: generator rules, packaged file freshness, lenient lookup."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from tokn_router.accounts import models_meta

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "gen_models_meta.py"
PACKAGED = REPO_ROOT / "src" / "tokn_router" / "data" / "models_meta.json"
# CI checks the shared folder out beside the repository.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "models-dev"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_models_meta", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_script()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


# --- the packaged file ------------------------------------------------------------


def test_packaged_json_is_generated_from_shared_data() -> None:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"models.dev data not found at {SHARED_DATA}: the shared folder must be checked "
            "out beside the repository (../shared) to verify models_meta.json"
        )
    expected = gen.render(gen.build(SHARED_DATA))
    assert PACKAGED.read_text(encoding="utf-8") == expected, (
        "src/tokn_router/data/models_meta.json is stale: run `python scripts/gen_models_meta.py`"
    )


def test_script_check_mode_agrees() -> None:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"models.dev data not found at {SHARED_DATA}")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(SHARED_DATA), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_packaged_json_shape() -> None:
    data = json.loads(PACKAGED.read_text(encoding="utf-8"))
    assert sorted(data) == sorted(gen.PROVIDERS)
    for provider_id, table in data.items():
        assert table, provider_id
        for model_id, entry in table.items():
            assert set(entry) <= {"name", "capabilities", "cost", "limit"}, model_id
            assert "base_model" not in entry.get("capabilities", {})
            assert "benchmarks" not in entry.get("capabilities", {})
    # compact and deterministic
    assert PACKAGED.read_text(encoding="utf-8") == gen.render(data)


def test_packaged_ids_do_not_collide_when_normalized() -> None:
    for provider_id in gen.PROVIDERS:
        ids = models_meta.static_model_ids(provider_id)
        normalized = {models_meta._normalize(i) for i in ids}
        assert len(normalized) == len(ids), provider_id


# --- inheritance rules on a synthetic tree ------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    _write(
        tmp_path / "base" / "lab" / "model-1-5.toml",
        """
        name = "Model 1.5"
        family = "model"
        reasoning = true
        tool_call = true
        attachment = true
        knowledge = "2025-01"

        [limit]
        context = 200_000
        input = 150_000
        output = 64_000

        [modalities]
        input = ["text", "image"]
        output = ["text"]

        [[benchmarks]]
        name = "Bench"
        score = 1.0
        """,
    )
    models = tmp_path / "prov" / "models"
    # Inherits everything; own name and cost win; no [limit] so the base one is kept.
    _write(
        models / "model-1.5.toml",
        """
        base_model = "lab/model-1-5"
        name = "Model 1.5 (prov)"
        reasoning_options = [{ type = "effort", values = ["low", "high"] }]

        [cost]
        input = 3
        output = 15
        """,
    )
    # Overrides [limit]: the inherited table is replaced whole (no context, no input).
    _write(
        models / "model-small.toml",
        """
        base_model = "lab/model-1-5"

        [limit]
        output = 32_000
        """,
    )
    # Omits inherited dot paths after the merge.
    _write(
        models / "model-omit.toml",
        """
        base_model = "lab/model-1-5"
        base_model_omit = ["limit.input", "knowledge", "limit.nonexistent", "nope.x"]
        """,
    )
    # No base model: taken as written.
    _write(
        models / "plain.toml",
        """
        name = "Plain"
        tool_call = false

        [limit]
        context = 8_192
        output = 4_096
        """,
    )
    # A git symlink checked out as a text file, and a dangling one.
    (models / "alias.toml").write_text("../../prov/models/plain.toml", encoding="utf-8")
    (models / "dangling.toml").write_text("../../other/models/gone.toml", encoding="utf-8")
    return tmp_path


def test_inheritance_and_provider_fields_win(tree: Path) -> None:
    entry = gen.build(tree, ["prov"])["prov"]["model-1.5"]
    assert entry["name"] == "Model 1.5 (prov)"
    assert entry["cost"] == {"input": 3, "output": 15}
    assert entry["limit"] == {"context": 200_000, "input": 150_000, "output": 64_000}
    caps = entry["capabilities"]
    assert caps["family"] == "model"
    assert caps["reasoning"] is True
    assert caps["tool_call"] is True
    assert caps["attachment"] is True
    assert caps["knowledge"] == "2025-01"
    assert caps["modalities"] == {"input": ["text", "image"], "output": ["text"]}
    assert caps["reasoning_options"] == [{"type": "effort", "values": ["low", "high"]}]
    assert "benchmarks" not in caps
    assert "base_model" not in caps


def test_overridden_table_replaces_inherited_one_whole(tree: Path) -> None:
    entry = gen.build(tree, ["prov"])["prov"]["model-small"]
    assert entry["limit"] == {"output": 32_000}
    assert entry["name"] == "Model 1.5"
    assert "cost" not in entry


def test_base_model_omit_removes_dot_paths(tree: Path) -> None:
    entry = gen.build(tree, ["prov"])["prov"]["model-omit"]
    assert entry["limit"] == {"context": 200_000, "output": 64_000}
    assert "knowledge" not in entry["capabilities"]
    assert "base_model_omit" not in entry["capabilities"]


def test_plain_and_text_symlink_files(tree: Path) -> None:
    table = gen.build(tree, ["prov"])["prov"]
    assert table["plain"] == {
        "name": "Plain",
        "capabilities": {"tool_call": False},
        "limit": {"context": 8_192, "output": 4_096},
    }
    assert table["alias"] == table["plain"]
    assert "dangling" not in table


def test_base_is_not_mutated_between_models(tree: Path) -> None:
    table = gen.build(tree, ["prov"])["prov"]
    # model-omit dropped limit.input; its siblings still see the base value.
    assert table["model-1.5"]["limit"]["input"] == 150_000


def test_missing_base_model_is_an_error(tree: Path) -> None:
    _write(tree / "prov" / "models" / "broken.toml", 'base_model = "lab/missing"\n')
    with pytest.raises(gen.DataError, match="lab/missing"):
        gen.build(tree, ["prov"])


def test_missing_provider_is_an_error(tree: Path) -> None:
    with pytest.raises(gen.DataError, match="absent"):
        gen.build(tree, ["absent"])


def test_render_is_compact_sorted_and_stable(tree: Path) -> None:
    text = gen.render(gen.build(tree, ["prov"]))
    assert text == gen.render(gen.build(tree, ["prov"]))
    assert text.endswith("}\n") and "\n" not in text[:-1] and ": " not in text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")) + "\n"


def test_script_writes_and_checks(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gen, "PROVIDERS", ("prov",))
    out = tmp_path / "out.json"
    assert gen.main([str(tree), "--output", str(out), "--check"]) == 1
    assert gen.main([str(tree), "--output", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["prov"]["plain"]["name"] == "Plain"
    assert gen.main([str(tree), "--output", str(out), "--check"]) == 0


# --- lookup ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    [
        "claude-sonnet-4.5",  # Copilot API / models.dev Copilot spelling
        "claude-sonnet-4-5",  # Anthropic spelling
        "claude-sonnet-4-5-20250929",  # dated Anthropic id
        "claude-sonnet-4-5-latest",
        "Claude_Sonnet_4.5",
        "github-copilot/claude-sonnet-4.5",
    ],
)
def test_lookup_tolerates_id_spellings(model_id: str) -> None:
    entry = models_meta.lookup("github-copilot", model_id)
    assert entry is not None
    assert entry == models_meta.lookup("github-copilot", "claude-sonnet-4.5")
    assert entry["cost"]["input"] == 3
    assert entry["capabilities"]["tool_call"] is True


def test_lookup_copilot_api_ids() -> None:
    for model_id in ("gpt-5-mini", "gpt-4.1", "gpt-4-1", "gpt-4.1-2025-04-14"):
        entry = models_meta.lookup("github-copilot", model_id)
        assert entry is not None, model_id
        assert entry["name"].startswith("GPT"), model_id
    mini = models_meta.lookup("github-copilot", "gpt-5-mini")
    assert mini is not None
    assert mini["limit"]["input"] == 128_000
    assert "image" in mini["capabilities"]["modalities"]["input"]


def test_lookup_zai_models() -> None:
    entry = models_meta.lookup("zai-coding-plan", "glm-5.1")
    assert entry is not None
    assert entry["capabilities"]["reasoning"] is True
    assert models_meta.lookup("zai-coding-plan", "GLM-5-1") == entry
    # zhipuai files that are text symlinks to zai resolve to the same data
    assert models_meta.lookup("zhipuai", "glm-4.7") == models_meta.lookup("zai", "glm-4.7")


def test_lookup_unknown() -> None:
    assert models_meta.lookup("github-copilot", "no-such-model") is None
    assert models_meta.lookup("github-copilot", "") is None
    assert models_meta.lookup("no-such-provider", "gpt-4.1") is None
    # a version suffix is stripped only to find an existing id
    assert models_meta.lookup("github-copilot", "no-such-model-latest") is None
    # a foreign provider prefix is not stripped
    assert models_meta.lookup("github-copilot", "zai/gpt-4.1") is None


def test_lookup_returns_a_copy() -> None:
    entry = models_meta.lookup("github-copilot", "gpt-4.1")
    assert entry is not None
    entry["cost"]["input"] = -1
    entry.clear()
    again = models_meta.lookup("github-copilot", "gpt-4.1")
    assert again is not None and again["cost"]["input"] != -1


def test_static_model_ids() -> None:
    ids = models_meta.static_model_ids("github-copilot")
    assert ids == sorted(ids)
    assert {"claude-sonnet-4.5", "gpt-5-mini", "gpt-4.1"} <= set(ids)
    assert models_meta.static_model_ids("no-such-provider") == []
    ids.clear()
    assert models_meta.static_model_ids("github-copilot")
    for provider_id in gen.PROVIDERS:
        assert models_meta.static_model_ids(provider_id), provider_id


def test_import_does_no_work() -> None:
    code = (
        "import tokn_router.accounts.models_meta as m;"
        "assert m._load.cache_info().currsize == 0;"
        "m.lookup('zai', 'glm-5');"
        "assert m._load.cache_info().currsize == 1"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
