//! Write-path safety (issue 13): every yes from the write path is true, and no path removes or
//! alters a message the user did not name. One regression test per defect, named after it
//! (`item_N_...`), against a real Dovecot (Courier where the defect needs a server without
//! SPECIAL-USE or MOVE); a seeded model-based test; a chaos server.
//!
//! One binary, a module per area, so that each area's tests share their fixtures:
//! `moves` (names after a move, target MODSEQ), `remove` (rm, trash mode, flag edits, panics on
//! server replies), `append` (drafts, APPEND proof, long headers), `folders` (rmdir, folder
//! rename, refresh commits, the saved index), `model` (the seeded random test), `chaos` (the
//! adversarial scripted server).

#[path = "../common/mod.rs"]
mod common;
#[path = "../script/mod.rs"]
mod script;

mod append;
mod chaos;
mod folders;
mod model;
mod moves;
mod remove;
