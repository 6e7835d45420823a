import json
from pathlib import Path

import pytest

from router.config import (
    PUBLISHER_TYPES,
    RouterConfig,
    load_config,
    parse_config,
    strip_json_comments,
)
from router.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

ORIGINAL = {
    "threads": [
        {
            "publisher_type": "StdInput",
            "message_flow_actions": {
                "SampleMsg": "Test Flow/integration-test",
                "ParamsMsg": "Test Flow with params/integration-test",
            },
        }
    ]
}


def problems(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_original_format_loads_unchanged():
    config = parse_config(ORIGINAL)
    (source,) = config.threads
    assert source.publisher_type == "StdInput"
    assert source.source_name == "stdin"
    assert config.routes() == {"stdin": source.message_flow_actions}
    assert source.message_flow_actions["SampleMsg"].deployment == "Test Flow/integration-test"
    assert config.deployments() == [
        "Test Flow/integration-test",
        "Test Flow with params/integration-test",
    ]


def test_repository_test_json_is_the_original_example():
    assert json.loads((ROOT / "test.json").read_text()) == ORIGINAL
    assert load_config(ROOT / "test.json") == parse_config(ORIGINAL)


def test_json_with_comments(tmp_path):
    path = tmp_path / "router.json"
    path.write_text(
        """{
  // the original README's style
  "threads": [ /* one source */
    {"publisher_type": "StdInput", // stdin
     "message_flow_actions": {"SampleMsg": "Test Flow/integration-test"}}
  ]
}"""
    )
    assert load_config(path).threads[0].message_flow_actions["SampleMsg"].deployment == (
        "Test Flow/integration-test"
    )


def test_comment_markers_inside_strings_are_kept():
    text = '{"url": "http://host/a", "glob": "/*x*/", "quote": "a\\"//b"} // gone'
    assert json.loads(strip_json_comments(text)) == {
        "url": "http://host/a",
        "glob": "/*x*/",
        "quote": 'a"//b',
    }


def test_yaml(tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(
        """
threads:
  - publisher_type: StdInput
    name: terminal
    message_flow_actions:
      SampleMsg: Test Flow/integration-test
      ParamsMsg:
        deployment: Test Flow with params/integration-test
        tags: [vip]
max_concurrency: 4
"""
    )
    config = load_config(path)
    assert config.max_concurrency == 4
    routes = config.routes()["terminal"]
    assert routes["ParamsMsg"].tags == ["vip"]
    assert routes["SampleMsg"].deployment == "Test Flow/integration-test"


def test_unknown_publisher_type_names_the_choices():
    data = {"threads": [{"publisher_type": "Foo", "message_flow_actions": {"A": "F/d"}}]}
    (line,) = problems(data)
    assert line == "threads[0].publisher_type: unknown 'Foo', expected one of " + ", ".join(
        f"'{name}'" for name in PUBLISHER_TYPES
    )
    assert "'StdInput', 'AzureStorageQueue'" in line


def test_one_line_per_problem_with_field_paths():
    data = {
        "threads": [
            {"publisher_type": "StdInput", "message_flow_actions": {"A": "F/d"}},
            {"message_flow_actions": {"A": "F/d"}},
            {"publisher_type": "StdInput", "message_flow_actions": {"A": "no-slash", "B": 5}},
            {"publisher_type": "StdInput", "name": "x", "message_flow_actions": {}, "typo": 1},
        ],
        "max_concurrency": 0,
    }
    assert problems(data) == [
        "threads[1].publisher_type: field required",
        "threads[2].message_flow_actions.A.deployment: "
        "expected 'Flow Name/deployment-name', got 'no-slash'",
        "threads[2].message_flow_actions.B: "
        "expected 'Flow Name/deployment-name' or an object with a `deployment`",
        "threads[3].message_flow_actions: Dictionary should have at least 1 item after "
        "validation, not 0",
        "threads[3].typo: unknown field",
        "max_concurrency: Input should be greater than or equal to 1",
    ]


def test_missing_threads_and_wrong_top_level():
    assert problems({}) == ["threads: field required"]
    assert problems([]) == ["config: expected an object with a `threads` list"]


def test_duplicate_source_names_are_refused():
    source = ORIGINAL["threads"][0]
    (line,) = problems({"threads": [source, source]})
    assert "both named 'stdin'" in line


def test_file_errors_name_the_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"threads": [}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: not valid JSON at line 1 column 14: Expecting value"]
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.json")


def test_schema_accepts_the_string_route_form():
    # The same model is the flow's parameter: the server validates deployment parameters
    # against this schema, so the string form must be allowed there too.
    schema = json.dumps(RouterConfig.model_json_schema())
    assert '"type": "string"' in schema
    assert "RouteTarget" in schema


@pytest.mark.parametrize("path", sorted((ROOT / "examples").iterdir()), ids=lambda p: p.name)
def test_every_example_config_loads(path):
    config = load_config(path)
    assert config.deployments()
