"""README's tables repeat facts for the reader; each must say what its one source says (pins.ini, the locks,
baselines.json), so that changing a pin or a baseline without the README fails here."""

from __future__ import annotations

import json

from conftest import KIT_ROOT
from flashocc_kit import pins, stacks

README = (KIT_ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return [row for row in rows[2:] if not set("".join(row)) <= set("-: ")]  # past the header and its rule


def test_the_support_matrix_is_pins_ini_and_the_locks():
    text = section("### The support matrix")
    rows = {row[0].split("`")[1]: row for row in table_rows(text.split("\n\n| cell |")[0]) if "`" in row[0]}
    assert set(rows) == set(stacks.load_stacks())
    for name, stack in stacks.load_stacks().items():
        row = rows[name]
        assert ("(default)" in row[0]) == stack.default, row
        assert row[1] == f"{stack.torch} / {stack.pinned('torchvision')}", row
        assert row[2] == ", ".join(stack.pythons) and row[3] == stack.torch_npu and row[4] == stack.mx_driving, row
        assert row[5] == (stack.mx_driving_a5 or "–"), row
        assert row[6] == ", ".join(stacks.architectures()) and row[7] == f"{stack.disk_gib:g} GiB", row


def test_the_common_pins_are_pins_ini():
    common = section("### The support matrix").split("Common to all:", 1)[1].split("\n\n", 1)[0]
    for project in pins.load_projects().values():
        if project.commit:
            assert f"@ {project.commit[:8]}" in common, project.name
        assert f"`{project.patch_file.name}`" in common, project.name
    assert f"numpy {stacks.default_stack().pinned('numpy')}" in common


def test_the_published_results_are_the_gates_baselines():
    rows = table_rows(section("## Results").split("### ", 1)[0])
    published = [b for b in json.loads((KIT_ROOT / "tools" / "baselines.json").read_text())["baselines"]
                 if b["device"] != "cpu"]
    assert len(rows) == len(published)
    for baseline in published:
        found = [row for row in rows if row[1] == str(baseline["global_batch"]) and row[4] == f"{baseline['miou']:g}"]
        assert len(found) == 1, baseline["name"]
        row = found[0]
        assert row[5] == f"{baseline['step_time_s']:g}", baseline["name"]
        assert row[6] == ("–" if baseline["fps"] is None else f"{baseline['fps']:g}"), baseline["name"]
        assert (row[2] == "–") if baseline.get("lr") is None else float(row[2]) == baseline["lr"], baseline["name"]
        assert ("fp16" in row[3]) == (baseline["precision"] == "fp16-backbone"), baseline["name"]


def test_the_readme_is_a_manual_of_at_most_300_lines():
    assert len(README.splitlines()) <= 300, "measurements and catalogues belong in docs/, one page each"


def test_the_launch_options_table_is_the_launchers_argparse():
    """README's one table of the launch scripts' options is what `kit.py launch --options-table` prints."""
    from flashocc_kit import cli
    from flashocc_kit.commands.launch import options_table

    launch = cli.build_parser()._subparsers._group_actions[0].choices["launch"]
    written = README.split("<!-- launch options: python3 tools/kit.py launch --options-table -->\n", 1)[1]
    written = written.split("\n\n", 1)[0].strip()
    assert written == options_table(launch), "regenerate it: python3 tools/kit.py launch --options-table"
    for action in launch._actions:
        for option in action.option_strings:
            assert option in written or option in ("-h", "--help", "--options-table"), option
