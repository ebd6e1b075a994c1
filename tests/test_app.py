def test_two_projects_with_a_module_of_the_same_name_load_their_own_app(tmp_path):
    from headrace.app import load_app
    from headrace.config import load_settings

    apps = []
    for name in ("first", "second"):
        project = tmp_path / name
        project.mkdir()
        (project / "headrace.toml").write_text('app = "pipeline:app"\n')
        (project / "pipeline.py").write_text(
            "from headrace import App\n"
            "app = App()\n"
            f"@app.function(name={name!r})\n"
            "def handler(event, context):\n"
            "    return event\n"
        )
        apps.append(load_app(load_settings(project)))
    assert "first" in apps[0].functions and "second" not in apps[0].functions
    assert "second" in apps[1].functions and "first" not in apps[1].functions
