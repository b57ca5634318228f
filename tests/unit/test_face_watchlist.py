

def test_a_community_defines_its_own_lists_and_a_bad_lists_file_is_named(tmp_path, capsys):
    lists = tmp_path / "face" / "lists.yaml"
    lists.parent.mkdir()
    lists.write_text(
        "lists:\n"
        "  visitors_banned: {description: 小区禁入, threshold: 0.7, margin: 0.2, hits: 4,"
        " cooldown_s: 60, retention_days: 14}\n"
    )
    store = WatchlistStore(tmp_path)
    assert list(store.lists()) == ["visitors_banned"]
    code, _, err = run(capsys, "face", "enroll", "--data-dir", str(tmp_path), "--list", "police",
                       "--person", "p", "--consent", "c", str(face_photos.photo("obama")))
    assert code == 2
    assert "no list 'police' (lists: visitors_banned)" in err
    lists.write_text("lists:\n  x: {description: d, threshold: 2, margin: 0, hits: 1,"
                     " cooldown_s: 0, retention_days: 1}\n")
    with pytest.raises(WatchlistError, match=r"lists.yaml: lists.x.threshold"):
        store.lists()
