"""Each file type loads; bad files and lines become issues with line numbers."""
import pytest

from rearqa.retriever import LOADERS, UnsupportedFileError
from rearqa.retriever.loaders import iter_input_files, load_file, loader_for


def test_jsonl_bad_lines_are_reported_and_good_lines_kept(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "docs.jsonl", [
        {"id": 1, "title": "One", "text": "first record", "lang": "en", "tags": "x"},
        '{"text": "broken", ',
        "",
        '["not", "an", "object"]',
        {"title": "no text"},
        {"text": "   "},
        {"text": "second record", "id": "a#b"},
        {"text": 5},
        {"text": "third record"},
    ])
    loaded = load_file(path)
    assert [d.text for d in loaded.documents] == ["first record", "third record"]
    first = loaded.documents[0]
    assert (first.record_id, first.title, first.line) == ("1", "One", 1)
    assert first.metadata == {"lang": "en", "tags": ["x"]}
    lines = {i.line: i.message for i in loaded.issues}
    assert sorted(lines) == [2, 4, 5, 6, 7, 8]
    assert "invalid JSON" in lines[2] and "expected a JSON object" in lines[4]
    assert "missing 'text'" in lines[5] and "empty" in lines[6] and "'#'" in lines[7]
    assert str(loaded.issues[0]).startswith(f"{path}:2: invalid JSON")


def test_jsonl_undecodable_line_is_reported(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    loaded = load_file(path)
    assert len(loaded.documents) == 1 and loaded.issues[0].line == 2


def test_text_markdown_html_load(tmp_path):
    (tmp_path / "notes.txt").write_text("Plain notes about gardening.\nSecond line.")
    (tmp_path / "guide.md").write_text("---\ntitle: The Guide\ntags: howto\nlevel: 2\n---\n"
                                       "# Ignored heading\n<!-- hidden -->\nSome **markdown** text.\n")
    (tmp_path / "page.html").write_text(
        "<html><head><title>My &amp; Page</title><style>p {color: red}</style>"
        "<script>var secret = 1;</script></head><body><h1>Header</h1><p>Visible&nbsp;text</p>"
        "<noscript>no js</noscript><p>More</p></body></html>")
    txt = load_file(tmp_path / "notes.txt").documents[0]
    assert (txt.title, txt.text.split()[0]) == ("notes", "Plain")
    md = load_file(tmp_path / "guide.md").documents[0]
    assert md.title == "The Guide" and md.metadata == {"tags": ["howto"], "level": 2}
    assert "hidden" not in md.text and "#" not in md.text and "Ignored heading" in md.text
    html = load_file(tmp_path / "page.html").documents[0]
    assert html.title == "My & Page"
    assert html.text.split() == ["Header", "Visible", "text", "More"]


def test_markdown_title_from_first_heading(tmp_path):
    (tmp_path / "a.md").write_text("Intro\n\n## Real Title ##\nbody\n")
    assert load_file(tmp_path / "a.md").documents[0].title == "Real Title"


def test_pdf_loads_pages_with_offsets(tmp_path, make_pdf):
    path = make_pdf(tmp_path / "paper.pdf", ["Hello page one", "Second page words here"], title="A Paper")
    loaded = load_file(path)
    assert not loaded.issues
    doc = loaded.documents[0]
    assert doc.title == "A Paper"
    assert doc.text.split() == "Hello page one Second page words here".split()
    assert doc.page_word_offsets == [0, 3]


def test_broken_and_empty_files_become_issues(tmp_path):
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.md").write_text("   \n")
    assert "cannot parse PDF" in load_file(tmp_path / "bad.pdf").issues[0].message
    assert "not UTF-8" in load_file(tmp_path / "latin1.txt").issues[0].message
    assert "no text" in load_file(tmp_path / "empty.md").issues[0].message
    assert "supported suffixes" in load_file(tmp_path / "x.docx").issues[0].message


def test_loader_registry_lists_suffixes():
    assert {".jsonl", ".txt", ".md", ".html", ".pdf"} <= set(LOADERS)
    with pytest.raises(UnsupportedFileError, match=r"suffix '\.docx'; supported suffixes are \["):
        from pathlib import Path
        loader_for(Path("report.docx"))


def test_folders_are_walked_recursively(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "a.txt").write_text("a")
    (tmp_path / "b.md").write_text("b")
    (tmp_path / "skip.bin").write_bytes(b"\0")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.txt").write_text("c")
    found = list(iter_input_files([tmp_path, tmp_path / "missing.txt"]))
    names = [f.name for f in found if hasattr(f, "name")]
    assert names == ["b.md", "a.txt"]
    assert "no such file" in found[-1].message
