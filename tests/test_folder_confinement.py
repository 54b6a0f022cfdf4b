"""Nothing outside a folder leaves or is served through a symlink (#34, item 2): one check
(`hfssl.run.confinement.check_confined`) behind push and the demo's model store."""

import shutil

import pytest

from hfssl import hub
from hfssl.run.confinement import OutsideFolderError, check_confined
from hfssl.serving.model_store import ModelStore
from tests.conftest import import_script

push = import_script("push")


@pytest.fixture
def outside_secret(tmp_path):
    secret = tmp_path / "outside" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY, never to be uploaded\n")
    return secret


def test_links_that_stay_inside_pass_and_links_out_are_named(tmp_path, outside_secret):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.txt").write_text("w")
    (folder / "sub" / "alias.txt").symlink_to(folder / "weights.txt")  # inside: fine
    check_confined(folder)
    (folder / "sub" / "notes.txt").symlink_to(outside_secret)
    with pytest.raises(OutsideFolderError, match=r"sub/notes.txt in .*model is a link to a file outside"):
        check_confined(folder)
    (folder / "sub" / "notes.txt").unlink()
    (folder / "linked_dir").symlink_to(outside_secret.parent, target_is_directory=True)
    with pytest.raises(OutsideFolderError, match="linked_dir"):
        check_confined(folder)
    check_confined(folder, boundary=tmp_path)  # a wider boundary takes it


def test_push_refuses_a_model_folder_with_a_link_out(gpt_dir, tmp_path, outside_secret, capsys):
    (gpt_dir / "extra_config.json").symlink_to(outside_secret)
    with pytest.raises(OutsideFolderError, match=r"extra_config\.json"):
        hub.prepare_upload_folder(gpt_dir, tmp_path / "up", "someone/model")
    assert not any((tmp_path / "up").rglob("*")) if (tmp_path / "up").exists() else True
    dry_run = tmp_path / "dry"
    code = push.main(
        ["--model_dir", str(gpt_dir), "--repo_id", "someone/model", "--dry_run", "--dry_run_dir", str(dry_run)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "extra_config.json" in err and "Traceback" not in err
    assert not [p for p in dry_run.rglob("*") if p.is_file() and "PRIVATE KEY" in p.read_text(errors="ignore")]


def test_the_demo_refuses_a_real_folder_of_links_out_of_its_root(models_root, outside_secret, tmp_path):
    copied = models_root / "copied"
    shutil.copytree(models_root / "gpt", copied)
    store = ModelStore(models_root)
    assert store.resolve("copied").endswith("copied")
    (copied / "tokenizer.json").unlink()
    (copied / "tokenizer.json").symlink_to(outside_secret)
    with pytest.raises(OutsideFolderError, match=r"tokenizer\.json in 'copied'") as refused:
        store.resolve("copied")
    assert str(tmp_path) not in str(refused.value)  # the page never shows the server's paths
    # links between folders of the root (a Hub cache's snapshots -> blobs) stay allowed
    (copied / "tokenizer.json").unlink()
    (copied / "tokenizer.json").symlink_to(models_root / "gpt" / "tokenizer.json")
    assert store.resolve("copied").endswith("copied")
