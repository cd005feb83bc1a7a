"""`.dockerignore` semantics as Docker documents them: cleaning, `**`, exceptions, parent matches."""

from __future__ import annotations

import pytest

from agent.errors import InvalidArgument
from agent.oci.dockerignore import IgnoreRules, clean, glob_match


def excluded(patterns: str, path: str) -> bool:
    return IgnoreRules.parse(patterns).excludes(path)


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        # the reference's example
        ("*/temp*", "somedir/temporary.txt", True),
        ("*/temp*", "somedir/temp", True),
        ("*/temp*", "temp", False),
        ("*/temp*", "a/b/temp", False),
        ("*/*/temp*", "somedir/subdir/temporary.txt", True),
        ("temp?", "tempa", True),
        ("temp?", "temp", False),
        ("temp?", "tempab", False),
        # leading slash, ./ and trailing slash mean the same path
        ("/foo/bar", "foo/bar", True),
        ("./foo/bar/", "foo/bar", True),
        ("foo/bar", "x/foo/bar", False),
        # a pattern matching a parent excludes everything below it
        ("node_modules", "node_modules/a/b.js", True),
        ("node_modules", "src/node_modules/a.js", False),
        # **
        ("**/*.go", "main.go", True),
        ("**/*.go", "a/b/c.go", True),
        ("**/*.go", "a/b/c.got", False),
        ("a/**", "a/b/c", True),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/c/z", True),
        ("**", "anything/at/all", True),
        # * and ? do not cross /
        ("*.md", "docs/x.md", False),
        ("*.md", "x.md", True),
        # character classes and escapes
        ("file[0-9].txt", "file5.txt", True),
        ("file[^0-9].txt", "file5.txt", False),
        ("file[^0-9].txt", "filex.txt", True),
        ("\\*.txt", "*.txt", True),
        ("\\*.txt", "a.txt", False),
        ("a.b", "axb", False),  # . is literal
        ("(x)", "(x)", True),
        # comments: # only in column 1
        ("# *.md\n", "a.md", False),
        (" # x", " # x", False),
    ],
)
def test_patterns(patterns: str, path: str, expected: bool) -> None:
    assert excluded(patterns, path) is expected


def test_exceptions_last_match_wins() -> None:
    rules = IgnoreRules.parse("*.md\n!README*.md\nREADME-secret.md\n")
    assert rules.excludes("CHANGES.md")
    assert not rules.excludes("README.md")
    assert rules.excludes("README-secret.md")
    rules = IgnoreRules.parse("*.md\nREADME-secret.md\n!README*.md\n")
    assert not rules.excludes("README-secret.md")
    assert rules.has_exceptions


def test_exception_inside_excluded_directory() -> None:
    rules = IgnoreRules.parse("vendor\n!vendor/keep\n")
    assert rules.excludes("vendor")
    assert rules.excludes("vendor/drop.txt")
    assert not rules.excludes("vendor/keep")
    assert not rules.excludes("vendor/keep/inner.txt")
    assert rules.may_reinclude_below("vendor")
    assert not rules.may_reinclude_below("other")


def test_everything_but() -> None:
    rules = IgnoreRules.parse("*\n!src\n!Dockerfile\n")
    assert rules.excludes("build.log")
    assert not rules.excludes("src/main.c")
    assert not rules.excludes("Dockerfile")


def test_bad_patterns_name_the_line() -> None:
    with pytest.raises(InvalidArgument, match=r"\.dockerignore line 2: illegal exclusion pattern"):
        IgnoreRules.parse("ok\n!\n")
    with pytest.raises(InvalidArgument, match=r"\.dockerignore line 1: bad pattern 'a\[b'"):
        IgnoreRules.parse("a[b\n")


def test_clean_is_go_filepath_clean() -> None:
    assert clean("") == "."
    assert clean("a//b/./c/..") == "a/b"
    assert clean("//x") == "/x"
    assert clean("./") == "."


def test_copy_globs() -> None:
    assert glob_match("src/*.txt", "src/a.txt")
    assert not glob_match("src/*.txt", "src/sub/a.txt")
    assert glob_match("*", "Dockerfile")
