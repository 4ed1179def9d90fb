//! `minos rules check|test`: rule files checked as `promtool check rules` checks them,
//! and rule unit-test files run as `promtool test rules` runs them, with promtool's
//! output and exit statuses (0 all good, 1 a failure, 3 lint findings with
//! `--lint-fatal`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check rule files (syntax, expressions, templates, names), like `promtool check rules`.
    Check(CheckArgs),
    /// Run rule unit-test files (the format of `promtool test rules`).
    Test(TestArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// Lint checks: `duplicate-rules`, `all` or `none`.
    #[arg(long, default_value = "duplicate-rules", value_parser = ["duplicate-rules", "all", "none"])]
    lint: String,
    /// Make lint findings exit with status 3.
    #[arg(long)]
    lint_fatal: bool,
    /// The rule files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct TestArgs {
    /// The unit-test files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Runs `minos rules ...`.
pub fn run(a: RulesArgs) -> ExitCode {
    // An offline tool: the storage engine's info lines about the scratch databases of
    // unit tests are noise here; warnings and errors still show.
    let quiet = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .finish();
    let res = tracing::subscriber::with_default(quiet, || match a.command {
        RulesCommand::Check(c) => check(&c),
        RulesCommand::Test(t) => test(&t),
    });
    match res {
        Ok(code) => ExitCode::from(code),
        // Only a closed stdout or stderr gets here.
        Err(_) => ExitCode::from(1),
    }
}

fn check(a: &CheckArgs) -> std::io::Result<u8> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let mut failed = false;
    let mut lint_found = false;
    for f in &a.files {
        writeln!(out, "Checking {}", f.display())?;
        out.flush()?;
        match alerting::rulefile::parse_file(f) {
            Err(errors) => {
                failed = true;
                writeln!(err, "  FAILED:")?;
                for e in errors {
                    writeln!(err, "{e}")?;
                }
            }
            Ok(file) => {
                let dups = if a.lint == "none" {
                    Vec::new()
                } else {
                    file.duplicate_rules()
                };
                if dups.is_empty() {
                    writeln!(out, "  SUCCESS: {} rules found", file.rule_count())?;
                } else {
                    lint_found = true;
                    writeln!(err, "  FAILED:")?;
                    writeln!(err, "lint error {} duplicate rule(s) found.", dups.len())?;
                    for d in dups {
                        writeln!(err, "Metric: {}\nLabel(s):", d.name)?;
                        for (k, v) in &d.labels {
                            writeln!(err, "\t{k}: {v}")?;
                        }
                    }
                    writeln!(err, "Might cause inconsistency while recording expressions")?;
                }
            }
        }
        writeln!(out)?;
    }
    Ok(if failed {
        1
    } else if lint_found && a.lint_fatal {
        3
    } else {
        0
    })
}

fn test(a: &TestArgs) -> std::io::Result<u8> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let ok = alerting::unittest::run_files(&a.files, &mut out, &mut err)?;
    Ok(if ok { 0 } else { 1 })
}
