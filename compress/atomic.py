"""Atomic file writes (see compress.runtime.atomic, the one implementation for the whole project).

The compress side has many call sites that import these names from here; they are the runtime's
functions themselves, not copies.
"""

from compress.runtime.atomic import (PARTIAL_SUFFIX, TMP_SUFFIX, Terminated, append_jsonl, atomic_path, dir_mode,
                                     file_mode, is_temp_name, move_into, os_error_line, remove_leftovers,
                                     scratch_dir, signals_as_exceptions, staged, staged_dir, temp_name, write_bytes,
                                     write_json, write_many, write_problem, write_text)

__all__ = ["PARTIAL_SUFFIX", "TMP_SUFFIX", "Terminated", "append_jsonl", "atomic_path", "dir_mode", "file_mode",
           "is_temp_name", "move_into", "os_error_line", "remove_leftovers", "scratch_dir", "signals_as_exceptions",
           "staged", "staged_dir", "temp_name", "write_bytes", "write_json", "write_many", "write_problem",
           "write_text"]
