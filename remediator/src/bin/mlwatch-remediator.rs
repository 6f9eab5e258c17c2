//! The remediator binary: `mlwatch-remediator [--config FILE]`.

fn main() {
    mlwatch_common::cli::main(
        "mlwatch-remediator",
        mlwatch_remediator::SECTIONS,
        mlwatch_remediator::run,
    )
}
