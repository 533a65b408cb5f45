"""The help a merchandiser reads: defaults written in help texts must survive rich's markup."""

from typer.testing import CliRunner

from functions.local.cli import app


def test_run_help_shows_the_defaults_written_in_its_texts():
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("png for transparent", "$CATALOG_MODELS_DIR", "a free one", "rembg:<path to .onnx>"):
        assert text in result.output


def test_review_reissue_is_mounted():
    result = CliRunner().invoke(app, ["review", "reissue", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "the latest one" in result.output
