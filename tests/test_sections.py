"""Tests for the report parser (raygen.data.reports) and the ``sections`` stage.

Every report here is synthetic text written for these tests (never MIMIC text).
"""

from __future__ import annotations

import csv
import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from raygen.config import ConfigError, load_section
from raygen.data import reports as rp
from raygen.data import sections as sec
from raygen.data.reports import (
    HEADER_RE,
    SectionRule,
    SpanRule,
    choose_prompt,
    clean_prompt_text,
    decode_report,
    normalize_section_name,
    render_report,
    section_report,
    split_sections,
    split_sentences,
)
from raygen.stages import sections as stage

TITLE = " " * 33 + "FINAL REPORT\n"


def names(text: str) -> list[str]:
    return [s.name for s in split_sections(text)]


def standard_report(impression: str = "No acute cardiopulmonary process.", **extra: str) -> str:
    sections = [
        ("EXAMINATION", "CHEST (PA AND LAT)"),
        ("INDICATION", "___ year old with cough."),
        ("COMPARISON", "Radiograph from ___."),
        ("FINDINGS", "The lungs are clear.\n\nThe heart is normal in size. No effusion."),
        ("IMPRESSION", impression),
    ]
    return render_report(sections, **extra)


# ------------------------------------------------------------------------------------------------
# Report format
# ------------------------------------------------------------------------------------------------


def test_render_report_follows_the_mimic_layout():
    text = standard_report(impression="A long impression sentence that goes on and on. " * 4)
    lines = text.split("\n")
    assert lines[0] == TITLE.rstrip("\n")
    assert text.endswith("\n") and lines[-1] == ""
    body = lines[1:-1]
    assert all(line.startswith(" ") for line in body)  # every line starts with one space
    assert not any(line.startswith("  ") for line in body)  # ... exactly one
    assert " " in body and "" not in body  # blank lines hold a single space
    assert "\n\n" not in text and "\n \n" in text  # paragraphs separated by "\n \n"
    assert max(map(len, lines)) <= rp.REPORT_WIDTH
    assert " INDICATION:  ___ year old with cough." in lines  # one paragraph: on the header line
    assert lines[lines.index(" FINDINGS:") + 1] == " "  # several: below the header


def test_paragraph_break_needs_the_single_space_blank_line():
    # A truly empty line is not a MIMIC paragraph break, so rule 6 does not split on it.
    spaced = TITLE + " EXAMINATION:  CHEST\n \n Lungs are clear.\n \n No effusion.\n"
    empty = TITLE + " EXAMINATION:  CHEST\n\n Lungs are clear.\n\n No effusion.\n"
    assert section_report(spaced)["last_paragraph"] == "Lungs are clear.\n \n No effusion."
    assert section_report(empty)["last_paragraph"] == ""


# ------------------------------------------------------------------------------------------------
# Rule 1: the header pattern
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "snippet, header",
    [
        ("\n IMPRESSION: x", "IMPRESSION"),
        ("\n IMPRESSION:\n x", "IMPRESSION"),
        ("\n FINDINGS/IMPRESSION:  x", "FINDINGS/IMPRESSION"),
        ("\n CHEST, PA LATERAL: x", "CHEST, PA LATERAL"),
        ("\n RECOMMENDATION(S):  x", "RECOMMENDATION(S)"),
        ("\n FRONTAL SEMI-UPRIGHT: x", "FRONTAL SEMI-UPRIGHT"),
    ],
)
def test_header_pattern_matches(snippet, header):
    match = HEADER_RE.search(snippet)
    assert match is not None and match.group(1) == header


@pytest.mark.parametrize(
    "snippet",
    [
        "\n Findings: lower case",
        "\n 1. LUNGS: digit and period",
        "\n IMPRESSION 2: digit",
        "\n DR. SMITH: period",
        "\nIMPRESSION: no leading space",
        "\n IMPRESSION:x no whitespace after the colon",
        " IMPRESSION: no newline before",
    ],
)
def test_header_pattern_rejects_pseudo_headers(snippet):
    assert HEADER_RE.search(snippet) is None


def test_lower_case_and_digit_pseudo_headers_stay_in_their_section():
    text = TITLE + " FINDINGS:  Lungs clear.\n Impression: not a header.\n 2. PLEURA: not either.\n"
    sections = split_sections(text)
    assert [s.name for s in sections] == ["preamble", "findings"]
    assert "Impression: not a header." in sections[1].text
    assert "2. PLEURA: not either." in sections[1].text


# ------------------------------------------------------------------------------------------------
# Rules 2-3: full report, preamble, boundaries
# ------------------------------------------------------------------------------------------------


def test_no_header_is_one_full_report_section():
    text = TITLE + " Chest radiograph shows clear lungs and no effusion.\n"
    sections = split_sections(text)
    assert [(s.name, s.text, s.start) for s in sections] == [("full report", text, 0)]
    assert section_report(text) == dict.fromkeys(rp.SECTIONED_COLUMNS, "")


def test_no_header_with_paragraphs_gives_last_paragraph():
    text = TITLE + " PA and lateral views of the chest.\n \n Lungs are clear.\n \n No effusion.\n"
    sections = split_sections(text)
    assert [s.name for s in sections] == ["full report", "last_paragraph"]
    assert section_report(text)["last_paragraph"] == "Lungs are clear.\n \n No effusion."


def test_preamble_and_section_boundaries():
    text = TITLE + " EXAMINATION:  CHEST PA\n \n INDICATION:  Cough.\n \n IMPRESSION:  Clear lungs.\n"
    sections = split_sections(text)
    assert [s.name for s in sections] == ["preamble", "examination", "indication", "impression"]
    pre, exam, ind, imp = sections
    assert pre.start == 0 and pre.text == TITLE + " "  # up to the header name
    # Content starts after the colon and ONE whitespace character, ends at the next header's newline.
    assert exam.text == " CHEST PA\n "
    assert text[exam.start :].startswith(" CHEST PA")
    assert ind.text == " Cough.\n "
    assert imp.text == " Clear lungs.\n"
    assert section_report(text)["impression"] == "Clear lungs."


def test_text_on_a_header_line_never_opens_a_section():
    text = TITLE + " CHEST, PA LATERAL:  PORTABLE AP CHEST: lungs are clear.\n IMPRESSION:  Normal.\n"
    sections = split_sections(text)
    assert [(s.header, s.name) for s in sections] == [
        ("preamble", "preamble"),
        ("chest, pa lateral", "findings"),
        ("impression", "impression"),
    ]
    assert sections[1].text.strip() == "PORTABLE AP CHEST: lungs are clear."


def test_header_alone_on_its_line_skips_the_next_line():
    # The colon's whitespace is the newline, so the search restarts at the END of the next line: a
    # header right below another header is part of the first section (the official behaviour).
    text = TITLE + " FINDINGS:\n IMPRESSION:  Clear.\n \n COMPARISON:  None.\n"
    sections = split_sections(text)
    assert [s.name for s in sections] == ["preamble", "findings", "comparison"]
    assert section_report(text)["findings"] == "IMPRESSION:  Clear."
    assert section_report(text)["impression"] == ""


# ------------------------------------------------------------------------------------------------
# Rule 4: name normalisation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, name",
    [
        ("IMPRESSION", "impression"),
        ("IMPRESSON", "impression"),
        ("IMPESSION", "impression"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("FINDINGS/ IMPRESSION", "impression"),
        ("IMPRESSION/FINDINGS", "impression"),  # not in the table: contains impression first
        ("IMPRESSION AND RECOMMENDATIONS", "impression"),
        ("FINDING", "findings"),
        ("FINIDNGS", "findings"),
        ("REFERENCE FINDINGS", "findings"),
        ("COMPARISONS", "comparison"),
        ("COMPARISION", "comparison"),
        ("REFERENCE EXAM", "comparison"),
        ("PRIOR COMPARISON", "comparison"),
        ("CLINICAL HISTORY", "history"),
        ("CLINICAL INFORMATION", "history"),
        ("PFI", "history"),
        ("HISTORY AND COMPARISON", "history"),  # history is checked before comparison
        ("REASON FOR EXAM", "indication"),
        ("REASON FOR EXAMINATION", "indication"),
        ("CLINICAL INDICATION", "indication"),
        ("EXAM", "examination"),
        ("TYPE OF EXAMINATION", "examination"),
        ("RECOMMENDATION(S)", "recommendations"),
        ("RECOMMENDATION", "recommendations"),
        ("WETREAD", "wet read"),
        ("ADDENDUM", "addendum"),
        ("SECOND ADDENDUM", "addendum"),
        ("CHEST, PA LATERAL", "findings"),
        ("PORTABLE AP CHEST", "findings"),
        ("CHEST, TWO VIEWS", "findings"),
        ("PA AND LAT", "findings"),
        ("FRONTAL SEMI-UPRIGHT", "findings"),
        ("RIBS, LEFT", "findings"),
        ("TECHNIQUE", "technique"),
        ("NOTIFICATION", "notification"),
        ("  SOME OTHER HEADER ", "some other header"),
    ],
)
def test_normalize_section_name(header, name):
    assert normalize_section_name(header) == name


def test_synonym_headers_in_a_report():
    text = (
        TITLE + " REASON FOR EXAM:  Cough.\n \n CLINICAL HISTORY:  Fever.\n \n COMPARISONS:  None."
        "\n \n FINDINGS AND IMPRESSION:  Lungs are clear.\n"
    )
    assert names(text) == ["preamble", "indication", "history", "comparison", "impression"]
    assert section_report(text) == {
        "impression": "Lungs are clear.",
        "findings": "",
        "last_paragraph": "",
        "comparison": "None.",
    }


# ------------------------------------------------------------------------------------------------
# Rules 5-7: dropping empties, last paragraph, last occurrence
# ------------------------------------------------------------------------------------------------


def test_empty_impression_is_dropped_and_the_real_one_kept():
    text = TITLE + " IMPRESSION: \n \n FINDINGS:  Lungs clear.\n \n IMPRESSION:  Small effusion.\n"
    assert names(text) == ["preamble", "findings", "impression"]
    assert section_report(text)["impression"] == "Small effusion."


def test_empty_last_impression_does_not_hide_an_earlier_one():
    text = TITLE + " IMPRESSION:  Small effusion.\n \n IMPRESSION: \n \n COMPARISON:  None.\n"
    assert section_report(text)["impression"] == "Small effusion."


def test_last_occurrence_wins():
    text = (
        TITLE + " FINDINGS:  First findings.\n \n IMPRESSION:  First impression.\n \n"
        " FINDINGS:  Second findings.\n \n IMPRESSION:  Second impression.\n"
    )
    row = section_report(text)
    assert row["findings"] == "Second findings."
    assert row["impression"] == "Second impression."


def test_empty_view_title_header_is_dropped():
    # "CHEST, PA LATERAL:" used as a report title directly above the next header: an empty findings.
    text = TITLE + " CHEST, PA LATERAL: \n \n INDICATION:  Cough.\n \n IMPRESSION:  Normal chest.\n"
    assert names(text) == ["preamble", "indication", "impression"]


def test_last_paragraph_rule():
    text = TITLE + (" EXAMINATION:  CHEST PA\n \n INDICATION:  Cough.\n \n Lungs are clear.\n \n Heart is normal.\n")
    sections = split_sections(text)
    assert [s.name for s in sections] == ["preamble", "examination", "indication", "last_paragraph"]
    assert sections[2].text == " Cough."
    assert sections[3].text == " Lungs are clear.\n \n Heart is normal.\n"
    assert text[sections[3].start :].startswith(" Lungs are clear.")
    assert section_report(text)["last_paragraph"] == "Lungs are clear.\n \n Heart is normal."


def test_no_last_paragraph_when_findings_or_impression_exist_or_no_break():
    with_findings = TITLE + " FINDINGS:  Clear.\n \n COMMENT:  One.\n \n Two.\n"
    assert "last_paragraph" not in names(with_findings)
    single = TITLE + " EXAMINATION:  CHEST\n \n INDICATION:  Cough only.\n"
    assert "last_paragraph" not in names(single)


def test_comparison_is_stripped_and_empty_when_absent():
    row = section_report(TITLE + " COMPARISON:    Radiograph from ___.   \n \n IMPRESSION:  Clear.\n")
    assert row["comparison"] == "Radiograph from ___."
    assert section_report(TITLE + " IMPRESSION:  Clear.\n")["comparison"] == ""


def test_addendum_above_the_report():
    text = render_report(
        [("INDICATION", "Cough."), ("IMPRESSION", "Clear lungs.")],
        addendum="The line tip was misreported; it is in the SVC.",
    )
    assert text.index("ADDENDUM") < text.index("FINAL REPORT")
    assert "\n " + "_" * (rp.REPORT_WIDTH - 1) + "\n" in text
    sections = split_sections(text)
    assert sections[0].name == "preamble" and "misreported" in sections[0].text
    assert section_report(text)["impression"] == "Clear lungs."
    # An addendum written with its own header line is an "addendum" section, not an impression.
    headed = TITLE + " ADDENDUM:  Tip in the SVC.\n \n IMPRESSION:  Clear lungs.\n"
    assert names(headed) == ["preamble", "addendum", "impression"]
    assert section_report(headed)["impression"] == "Clear lungs."


def test_render_then_parse_round_trip():
    row = section_report(standard_report())
    assert row == {
        "impression": "No acute cardiopulmonary process.",
        "findings": "The lungs are clear.\n \n The heart is normal in size. No effusion.",
        "last_paragraph": "",
        "comparison": "Radiograph from ___.",
    }


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------


def test_decode_utf8_non_ascii_crlf_and_bom():
    text = TITLE + " IMPRESSION:  Effusion 5 mm — unchanged, 37 °C, café.\n"
    data = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8")
    decoded = decode_report(data)
    assert decoded == text
    assert section_report(decoded)["impression"] == "Effusion 5 mm — unchanged, 37 °C, café."
    with pytest.raises(UnicodeDecodeError):
        decode_report(b"IMPRESSION: caf\xe9\n")  # Latin-1, not UTF-8


# ------------------------------------------------------------------------------------------------
# Prompt text
# ------------------------------------------------------------------------------------------------


def test_clean_keeps_case_digits_punctuation_and_collapses_whitespace():
    raw = "1. Moderate RIGHT pleural effusion,\n 2.5 cm (increased).\n \n 2. No pneumothorax!"
    expected = "1. Moderate RIGHT pleural effusion, 2.5 cm (increased). 2. No pneumothorax!"
    assert clean_prompt_text(raw).text == expected


def test_trailing_notification_label_is_removed():
    raw = "Small left effusion. NOTIFICATION: Dr. ___ was paged at 10:00 on ___."
    cleaned = clean_prompt_text(raw)
    assert cleaned.text == "Small left effusion." and cleaned.stripped_notification
    assert clean_prompt_text("No edema. Recommendation(s): CT in 3 months.").text == "No edema."


def test_communication_sentences_are_removed():
    raw = (
        "1. Right lower lobe pneumonia. These findings were communicated to Dr. ___ by telephone at"
        " 10:15 a.m. on ___, 5 minutes after discovery. 2. Stable cardiomegaly."
    )
    cleaned = clean_prompt_text(raw)
    assert cleaned.text == "1. Right lower lobe pneumonia. 2. Stable cardiomegaly."
    assert cleaned.stripped_notification
    for sentence in (
        "Findings discussed with Dr. ___ at 8 am.",
        "The referring physician was notified by phone.",
        "Results were posted to the critical results dashboard.",
    ):
        assert clean_prompt_text("Small effusion. " + sentence).text == "Small effusion.", sentence


def test_clinical_sentences_are_not_mistaken_for_communication():
    for text in (
        "Multiple rib fractures were reported on the prior CT.",
        "Findings are consistent with pulmonary edema.",
        "Recommend follow-up radiograph after treatment.",
    ):
        cleaned = clean_prompt_text(text)
        assert cleaned.text == text and not cleaned.stripped_notification


def test_notification_kept_when_disabled():
    raw = "Small effusion. These findings were discussed with Dr. ___ at 9 am."
    cleaned = clean_prompt_text(raw, strip_notification=False)
    assert cleaned.text.startswith("Small effusion. These findings were discussed with")
    assert "___" not in cleaned.text and not cleaned.stripped_notification


def test_placeholders_are_dropped_sensibly():
    assert clean_prompt_text("Compared to ___, the effusion is smaller.").text == "The effusion is smaller."
    assert clean_prompt_text("New opacity (___) since ___.").text == "New opacity."
    assert clean_prompt_text("Stable since the study on ___ .").text == "Stable since the study."
    assert "_" not in clean_prompt_text("___ ___ effusion ___").text


def test_sentence_splitter_respects_titles_times_and_list_numbers():
    text = "1. Pneumonia. Called Dr. ___ at 3 p.m. on ___. 2. Effusion. Done at 4 p.m. Lungs clear."
    assert split_sentences(text) == [
        "1. Pneumonia.",
        "Called Dr. ___ at 3 p.m. on ___.",
        "2. Effusion.",
        "Done at 4 p.m.",
        "Lungs clear.",
    ]


def test_choose_prompt_fallback_order():
    row = {"impression": "", "findings": "Lungs clear.", "last_paragraph": "Para.", "comparison": "None."}
    assert choose_prompt(row) is None  # the paper: impression only
    prompt = choose_prompt(row, ["impression", "findings", "last_paragraph", "comparison"])
    assert (prompt.text, prompt.source) == ("Lungs clear.", "findings")
    prompt = choose_prompt(row, ["comparison", "findings"])
    assert (prompt.text, prompt.source) == ("None.", "comparison")


def test_communication_only_impression_falls_through():
    row = {
        "impression": "Findings discussed with Dr. ___ at 8 am.",
        "findings": "Small effusion.",
        "last_paragraph": "",
        "comparison": "",
    }
    assert choose_prompt(row) is None
    assert choose_prompt(row, ["impression", "findings"]).source == "findings"
    assert choose_prompt(row, ["impression"], strip_notification=False).source == "impression"


# ------------------------------------------------------------------------------------------------
# Params
# ------------------------------------------------------------------------------------------------


def test_params_defaults_and_validation(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "profile: demo\nsections:\n  workers: 1\nprofiles:\n  paper:\n    sections:\n      workers: 0\n"
        "      prompt_fallback: [impression, findings]\n"
    )
    demo = load_section(params, "sections", stage.SectionsParams)
    assert demo.prompt_fallback == ["impression"] and demo.strip_notification and demo.workers == 1
    paper = load_section(params, "sections", stage.SectionsParams, profile="paper")
    assert paper.prompt_fallback == ["impression", "findings"] and paper.workers == 0
    with pytest.raises(ConfigError, match="unknown section"):
        stage.SectionsParams(prompt_fallback=["impression", "history"])
    with pytest.raises(ConfigError):
        stage.SectionsParams(prompt_fallback=[])
    params.write_text("sections:\n  max_words: 3\n")
    with pytest.raises(ConfigError, match="sections.max_words"):
        load_section(params, "sections", stage.SectionsParams)


# ------------------------------------------------------------------------------------------------
# The stage
# ------------------------------------------------------------------------------------------------

# (subject, study, report text or bytes)
REPORTS: list[tuple[int, int, str | bytes]] = [
    (10000032, 50414267, standard_report("Small left effusion. NOTIFICATION: Dr. ___ paged.")),
    (10000032, 50000001, standard_report("Cardiomegaly.")),
    (10000764, 57375967, TITLE + " EXAMINATION:  CHEST\n \n INDICATION:  Cough.\n \n Lungs are clear.\n"),
    (11000011, 51000001, standard_report("Épanchement 5 mm — stable.")),
    (11000011, 51000002, b"IMPRESSION: caf\xe9\n"),  # invalid UTF-8
    (11000011, 51000003, b""),  # empty
    (11000011, 51000004, b" \n \n"),  # whitespace only: empty
    (19999999, 59999999, TITLE + " No header at all in this report.\n"),
]


def write_tree(files_root: Path) -> None:
    for subject, study, text in REPORTS:
        path = files_root / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    # An unreadable report: a dangling link (chmod 000 does not stop root).
    broken = files_root / "p11" / "p11000011" / "s51000005.txt"
    broken.symlink_to(files_root / "does-not-exist.txt")
    # Things that are not reports are ignored.
    (files_root / "p10" / "p10000032" / "s50414267").mkdir()  # the JPG study folder
    (files_root / "p10" / "p10000032" / "notes.txt").write_text("x")
    (files_root / "index.html").write_text("x")


def write_zip(path: Path, prefix: str = "files/") -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for subject, study, text in REPORTS:
            name = f"{prefix}p{str(subject)[:2]}/p{subject}/s{study}.txt"
            zf.writestr(name, text if isinstance(text, bytes) else text.encode("utf-8"))
        zf.writestr(f"{prefix}README.txt", "not a report")


def run_stage(tmp_path: Path, root: Path, name: str, params_text: str = "sections: {}\n") -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(params_text)
    out = tmp_path / name / "mimic_cxr_sectioned.csv"
    rc = stage.main(
        [
            "--reports-root",
            str(root),
            "--out",
            str(out),
            "--params",
            str(params),
            "--log",
            str(tmp_path / name / "sections.log"),
        ]
    )
    assert rc == 0
    return out


def test_stage_main_end_to_end(tmp_path):
    data = tmp_path / "mimic-cxr" / "2.0.0"
    write_tree(data / "files")
    out = run_stage(tmp_path, data, "run")

    with open(out, newline="", encoding="utf-8") as f:
        assert f.readline() == "study,impression,findings,last_paragraph,comparison\n"
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert table["study"].tolist() == ["s50000001", "s50414267", "s57375967", "s51000001", "s59999999"]
    by_study = table.set_index("study")
    assert by_study.loc["s50414267", "impression"] == "Small left effusion. NOTIFICATION: Dr. ___ paged."
    assert by_study.loc["s57375967", "last_paragraph"] == "Lungs are clear."
    assert by_study.loc["s51000001", "impression"] == "Épanchement 5 mm — stable."
    assert by_study.loc["s59999999"].tolist() == ["", "", "", ""]
    findings = "The lungs are clear.\n \n The heart is normal in size. No effusion."
    assert by_study.loc["s50000001", "findings"] == findings

    prompts_path = out.with_name("prompts.csv")
    with open(prompts_path, encoding="utf-8") as f:
        assert f.readline() == "study_id,subject_id,text,source\n"
    prompts = pd.read_csv(prompts_path)
    assert prompts["study_id"].dtype.kind == "i" and prompts["subject_id"].dtype.kind == "i"
    assert prompts.values.tolist() == [
        [50000001, 10000032, "Cardiomegaly.", "impression"],
        [50414267, 10000032, "Small left effusion.", "impression"],
        [51000001, 11000011, "Épanchement 5 mm — stable.", "impression"],
    ]

    summary = json.loads(out.with_name("summary.json").read_text())
    assert summary["files_found"] == 9
    counts = [summary[k] for k in ("parsed", "unreadable", "invalid_utf8", "empty")]
    assert counts == [5, 1, 1, 2]
    assert summary["no_usable_section"] == 1
    assert summary["prompts"] == 3 and summary["no_prompt"] == 2
    assert summary["notification_stripped"] == 1
    assert summary["with_section"] == {"impression": 3, "findings": 3, "last_paragraph": 1, "comparison": 3}
    assert summary["examples"]["unreadable"] == ["p11/p11000011/s51000005.txt"]
    assert summary["examples"]["invalid_utf8"] == ["p11/p11000011/s51000002.txt"]
    log_text = (tmp_path / "run" / "sections.log").read_text()
    assert "unreadable: 1 file(s) skipped" in log_text and "invalid_utf8: 1" in log_text
    assert not list(out.parent.glob("*.tmp"))  # atomic writes leave nothing behind


def test_stage_fallback_and_prompts_path(tmp_path):
    data = tmp_path / "data"
    write_tree(data / "files")
    params = tmp_path / "params.yaml"
    params.write_text(
        "sections:\n  prompt_fallback: [impression, findings, last_paragraph, comparison]\n"
        "  strip_notification: false\n"
    )
    out = tmp_path / "o" / "sectioned.csv"
    prompts_path = tmp_path / "elsewhere" / "p.csv"
    assert (
        stage.main(
            ["--reports-root", str(data), "--out", str(out), "--prompts", str(prompts_path), "--params", str(params)]
        )
        == 0
    )
    prompts = pd.read_csv(prompts_path).set_index("study_id")
    assert prompts.loc[57375967, "source"] == "last_paragraph"
    assert prompts.loc[50414267, "text"] == "Small left effusion. NOTIFICATION: paged."
    assert 59999999 not in prompts.index  # nothing usable at all


def test_zip_and_files_folder_inputs_give_identical_outputs(tmp_path):
    data = tmp_path / "data"
    write_tree(data / "files")
    reference = run_stage(tmp_path, data, "dir")
    zip_path = tmp_path / "zipped" / "mimic-cxr-reports.zip"
    zip_path.parent.mkdir()
    write_zip(zip_path)
    for name, root in [("files", data / "files"), ("zip", zip_path), ("zipdir", zip_path.parent)]:
        out = run_stage(tmp_path, root, name)
        assert out.read_bytes() == reference.read_bytes(), name
        assert out.with_name("prompts.csv").read_bytes() == reference.with_name("prompts.csv").read_bytes()
    summary = json.loads((tmp_path / "zip" / "summary.json").read_text())
    assert summary["source"] == "zip" and summary["parsed"] == 5 and summary["invalid_utf8"] == 1


def test_zip_members_are_read_without_extracting(tmp_path):
    zip_path = tmp_path / "reports.zip"
    write_zip(zip_path, prefix="mimic-cxr-reports/files/")
    source = sec.resolve_source(zip_path)
    refs = sec.list_reports(source)
    assert [r.study for r in refs][:2] == ["s50000001", "s50414267"]
    assert refs[0].subject_id == 10000032
    assert sorted(os.listdir(tmp_path)) == ["reports.zip"]


def test_pool_gives_the_same_results_as_one_process(tmp_path):
    data = tmp_path / "data"
    write_tree(data / "files")
    zip_path = tmp_path / "r.zip"
    write_zip(zip_path)
    for root in (data, zip_path):
        source = sec.resolve_source(root)
        refs = sec.list_reports(source)
        serial = sec.process_all(source, refs, stage.SectionsParams(workers=1))
        pooled = sec.process_all(source, refs, stage.SectionsParams(workers=2), min_per_worker=1)
        assert pooled == serial


def test_missing_reports_root_is_an_error(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sections: {}\n")
    (tmp_path / "empty").mkdir()
    rc = stage.main(
        ["--reports-root", str(tmp_path / "empty"), "--out", str(tmp_path / "o.csv"), "--params", str(params)]
    )
    assert rc == 2 and not (tmp_path / "o.csv").exists()


def test_custom_rules_hook(monkeypatch):
    assert rp.CUSTOM_RULES == {}  # shipped empty: no MIMIC-derived ids in the code
    text = TITLE + " INDICATION:  Clear lungs, misfiled.\n \n IMPRESSION:  Wrong section.\n"
    ref = sec.ReportRef("s50000002", 10000001, "p10/p10000001/s50000002.txt")
    params = stage.SectionsParams()
    monkeypatch.setitem(rp.CUSTOM_RULES, "s50000002", SectionRule("indication"))
    result = sec.parse_report(ref, text, params)
    assert (result.prompt.text, result.prompt.source) == ("Clear lungs, misfiled.", "custom")
    assert result.custom_rule
    assert result.sections[0] == "Wrong section."  # the sectioned row stays as parsed
    start = text.index("Wrong")
    monkeypatch.setitem(rp.CUSTOM_RULES, "s50000002", SpanRule(start, start + len("Wrong section.")))
    assert sec.parse_report(ref, text, params).prompt.text == "Wrong section."
    monkeypatch.setitem(rp.CUSTOM_RULES, "s50000002", SpanRule(0, 0))
    assert sec.parse_report(ref, text, params).prompt is None


def test_sectioned_csv_round_trips_through_the_csv_module(tmp_path):
    # Multi-line, comma- and quote-bearing fields survive: any CSV reader gets the same strings back.
    data = tmp_path / "data"
    path = data / "files" / "p10" / "p10000001" / "s50000009.txt"
    path.parent.mkdir(parents=True)
    path.write_text(standard_report('Effusion, "moderate";\n \n second paragraph.'), encoding="utf-8")
    out = run_stage(tmp_path, data, "q")
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[1][1] == 'Effusion, "moderate";\n \n second paragraph.'
