"""kit.export.gotemplate executes the part of Go's text/template that Ollama TEMPLATEs use as Go would,
and refuses what Ollama could not run."""

import pytest

from kit.export.gotemplate import GoTemplateError, Struct, execute, go_json, uses


def message(role, content=""):
    return Struct("Message", {"Role": role, "Content": content, "ToolCalls": []})


def test_trim_markers_eat_whitespace_on_their_side_only():
    assert execute("a \n {{- .X }} \n b", {"X": "x"}) == "ax \n b"
    assert execute("a {{ .X -}} \n\t b", {"X": "x"}) == "a xb"
    assert execute("a {{- /* a comment */ -}} b", {}) == "ab"


def test_branches_ranges_and_variables():
    data = {
        "Messages": [message("system", "S"), message("user", "U1"), message("assistant", "A"), message("user", "U2")]
    }
    template = (
        '{{ $last := -1 }}{{ range $i, $m := .Messages }}{{ if eq .Role "user" }}{{ $last = $i }}{{ end }}{{ end }}'
        '{{ range $i, $m := .Messages }}{{ if eq $i 0 }}[{{ .Content }}]{{ else if eq .Role "user" }}u:{{ .Content }}'
        "{{ else }}{{ $m.Role }}:{{ $.X }}{{ end }};{{ end }}last={{ $last }}"
        "{{ range .Empty }}never{{ else }} empty{{ end }}"
    )
    assert execute(template, {**data, "X": "x"}) == "[S];u:U1;assistant:x;u:U2;last=3 empty"


def test_functions():
    data = {"L": [1, 2, 3], "S": "", "T": "t", "M": {"b": 1, "a": "<&>"}}
    assert execute("{{ len (slice .L 1) }} {{ index .L 2 }} {{ .L | len }}", data) == "2 3 3"
    assert (
        execute('{{ and .T .S }}|{{ or .S .T }}|{{ not .S }}|{{ eq .T "x" "t" }}|{{ ne 1 2 }}', data)
        == "|t|true|true|true"
    )
    assert execute("{{ json .M }}", data) == '{"b":1,"a":"\\u003c\\u0026\\u003e"}'  # Go's json.Marshal escapes
    assert execute("{{ range $k, $v := .M }}{{ $k }}{{ end }}", data) == "ab"  # a map ranges in key order
    assert go_json({"x": ["ü", 1.5]}) == '{"x":["ü",1.5]}'


def test_structs_print_as_their_string_method_only():
    arguments = Struct("ToolCallFunctionArguments", {}, json_value={"city": "Zürich"}, stringer=True)
    assert execute("{{ .A }}", {"A": arguments}) == '{"city":"Zürich"}'
    with pytest.raises(GoTemplateError, match="printing"):
        execute("{{ .M }}", {"M": message("user")})


@pytest.mark.parametrize(
    "template, error",
    [
        ("{{ .M.ToolCall }}", "can't evaluate field ToolCall in type Message"),  # a typo Ollama would refuse too
        ("{{ trim .X }}", 'function "trim" not defined'),
        ("{{ if .X }}open", "without"),
        ("{{ end }}", "unexpected"),
        ("{{ $y }}", "undefined variable"),
        ("{{ slice .X 0 2 }}", "out of range"),
    ],
)
def test_what_ollama_could_not_run_is_an_error(template, error):
    with pytest.raises(GoTemplateError, match=error):
        execute(template, {"M": message("user"), "X": "x"})


def test_uses_finds_fields_in_actions_only():
    assert uses("{{ range .Messages }}{{ end }}", "Messages")
    assert not uses("Messages .Messages {{ .Prompt }}", "Messages")
