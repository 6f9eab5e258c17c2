//! The alerter binary: `mlwatch-alerter [--config FILE]`.

fn main() {
    mlwatch_common::cli::main("mlwatch-alerter", mlwatch_alerter::SECTIONS, mlwatch_alerter::run)
}
