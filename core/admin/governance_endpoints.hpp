#pragma once

// Subject access, legal holds and erasure on the admin API: what
// `switchboard sar`, `hold` and `erase` do, for the DPO's tools, on a running node, through
// the same functions (governance/sar.hpp, governance/holds.hpp) on the
// journal's store. Holds placed here take effect at once and are audited by
// the node at its next sweep, as the commands' are.
//
//   POST sar               find a person's records, optionally hold them
//   POST sar/close         end the holds of a subject access request
//   GET  holds             every hold, in force or not
//   POST holds             hold records, by id or for a person
//   POST holds/{id}/end    end a hold
//   POST erasures          erase a person's records (or named ones) everywhere
//   GET  erasures          the erasures kept
//   GET  erasures/{id}     what is confirmed and what is outstanding
//
// Identifiers and reasons arrive in bodies (never in paths or queries, which
// proxies and shell histories keep) and are never logged; the AdminApi's
// audit entry names the endpoint and the token, and the token's name is who
// sets or ends a hold. These are POSTs, so a read_only token is refused.

#include "admin/node_endpoints.hpp"

#include <cstddef>
#include <cstdint>

namespace switchboard::admin {

// Larger bodies are refused with 413: identifiers, a reason and a few
// thousand record ids fit.
inline constexpr std::size_t kMaxGovernanceBody = 64 * 1024;
// POST erasures may wait this long at most for the node and the answers.
inline constexpr std::int64_t kMaxEraseWaitSeconds = 30;

// False if an endpoint could not be added (a name taken).
bool add_governance_endpoints(AdminApi& api, const Node& node);

} // namespace switchboard::admin
