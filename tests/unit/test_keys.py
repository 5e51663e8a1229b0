from skypacs.keys import incoming_key, instance_key, is_instance_key, quarantine_key


def test_instance_key_layout() -> None:
    key = instance_key("1.2", "1.2.3", "1.2.3.4")
    assert key == "studies/1.2/series/1.2.3/instances/1.2.3.4.dcm"
    assert is_instance_key(key)
    assert not is_instance_key("quarantine/x/1.2.3.4.dcm")
    assert not is_instance_key(incoming_key("upload"))


def test_quarantine_keys_never_collide() -> None:
    assert quarantine_key("studies/a/series/b/instances/c.dcm", "id1") == "quarantine/id1/c.dcm"
    assert quarantine_key("incoming/x.dcm", "id1") != quarantine_key("incoming/x.dcm", "id2")
