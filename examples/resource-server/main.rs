//! An example API that validates jwt-refresh-token's access tokens: discovery + JWKS, DPoP
//! `cnf.jkt` enforcement, introspection for one sensitive route. See `server.rs` and
//! docs/resource-servers.md.
//!
//! ```sh
//! cargo run --example resource-server -- --issuer http://localhost:7071/api \
//!     --audience jwt-refresh-token-dev --listen 127.0.0.1:8081 --public-url http://127.0.0.1:8081
//! # optional: INTROSPECTION_CLIENT_ID=… INTROSPECTION_CLIENT_SECRET=… for GET /payments
//! ```

mod server;

use std::sync::Arc;

use clap::Parser;

/// Settings of the example resource server.
#[derive(Debug, Parser)]
struct Args {
    /// The token service's Issuer, exactly as it is configured there.
    #[arg(long)]
    issuer: String,
    /// The audience this API accepts.
    #[arg(long)]
    audience: String,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// This server's public base URL (what DPoP proofs name in `htu`).
    #[arg(long)]
    public_url: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // The secret comes from the environment (never argv, which other users can read).
    let introspection = match (std::env::var("INTROSPECTION_CLIENT_ID"), std::env::var("INTROSPECTION_CLIENT_SECRET")) {
        (Ok(id), Ok(secret)) => Some((id, secret)),
        _ => None,
    };
    let config =
        server::Config { issuer: args.issuer, audience: args.audience, public_url: args.public_url, introspection };
    let rs = Arc::new(server::ResourceServer::discover(config).await?);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("resource server on {} (GET /me, GET /payments)", listener.local_addr()?);
    server::serve(rs, listener).await;
    Ok(())
}
