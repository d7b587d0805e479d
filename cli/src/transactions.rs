//! `strata transactions list | describe ID | abort ID`: transactional producers'
//! transactions, as Kafka's `kafka-transactions.sh` shows them.

use anyhow::Result;
use strata_client::proto;
use strata_client::proto::transactions_client::TransactionsClient;

use crate::args::TransactionsCommand;
use crate::target::{Target, answer};

pub async fn run(server: &Target, command: TransactionsCommand) -> Result<()> {
    let mut client = TransactionsClient::new(server.connect().await?.transport());
    match command {
        TransactionsCommand::List => {
            let listed = answer(
                client
                    .list_transactions(proto::ListTransactionsRequest {})
                    .await,
            )?;
            println!(
                "transactional_id\tstate\tproducer_id\tepoch\tpartitions\tage_ms\tcoordinator"
            );
            for t in &listed.transactions {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    t.transactional_id,
                    t.state,
                    t.producer_id,
                    t.producer_epoch,
                    t.partitions
                        .iter()
                        .map(|p| p.partitions.len())
                        .sum::<usize>(),
                    age_ms(t),
                    t.coordinator
                );
            }
        }
        TransactionsCommand::Describe { transactional_id } => {
            let t = answer(
                client
                    .describe_transaction(proto::DescribeTransactionRequest { transactional_id })
                    .await,
            )?
            .transaction
            .unwrap_or_default();
            println!("transactional_id: {}", t.transactional_id);
            println!("state: {}", t.state);
            println!("producer_id: {}", t.producer_id);
            println!("producer_epoch: {}", t.producer_epoch);
            println!("timeout_ms: {}", t.timeout_ms);
            println!("coordinator: {}", t.coordinator);
            if t.started_ms > 0 {
                println!("open for: {} ms", age_ms(&t));
            }
            for p in &t.partitions {
                for partition in &p.partitions {
                    println!("partition: {}/{partition}", p.topic);
                }
            }
        }
        TransactionsCommand::Abort { transactional_id } => {
            answer(
                client
                    .abort_transaction(proto::AbortTransactionRequest {
                        transactional_id: transactional_id.clone(),
                    })
                    .await,
            )?;
            println!("aborted the open transaction of {transactional_id} (if one was open)");
        }
    }
    Ok(())
}

/// How long the transaction has been open, ms (0 if none is).
fn age_ms(t: &proto::TransactionInfo) -> i64 {
    if t.started_ms == 0 {
        return 0;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    (now - t.started_ms).max(0)
}
