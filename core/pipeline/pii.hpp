#pragma once

// Personal data in free text, and the field transforms of profiles.
//
// Everything here is a pure function of its input, fast (no std::regex on
// the record path: hand-written scanners), and never logs.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::pii {

// What redact() finds, each replaced by its placeholder "[TYPE]".
enum class Kind {
    Card,      // payment card number (13-19 digits, spaced or dashed, Luhn-valid) -> [CARD]
    Cvv,       // "CVV 123", "cvc: 1234", "security code is 123", "3 digits on the back 123" -> [CVV]
    Expiry,    // "exp 09/27", "expiry 09/2027", "expires 9/27", "valid until 09-27" -> [EXPIRY]
    Nino,      // National Insurance number "QQ 12 34 56 C", "QQ123456C" (any valid prefix) -> [NINO]
    Phone,     // UK numbers: "0151 496 0732", "07700 900312", "+44 7700 900312", "(0151) 4960732",
               // "447700900312", "+44 (0)151 496 0732" -> [PHONE]
    Email,     // "name@example.org" -> [EMAIL]
    SortCode,  // "sort code 12-34-56", "12-34-56" next to an account number -> [SORT_CODE]
    Account,   // 8-digit account number after "account"/"acc"/"a/c" -> [ACCOUNT]
    Postcode,  // UK postcodes "L8 0ZZ", "l80zz", "SW1A 1AA", "M1 1AE" -> [POSTCODE]
};

const char* placeholder(Kind kind); // "[CARD]", "[NINO]", ...

struct Finding {
    Kind kind;
    std::size_t begin; // byte offsets into the input
    std::size_t end;
};

// Replaces every kind of PII above with its placeholder. `found` (optional)
// receives what was replaced, in order. Text without PII comes back
// unchanged (byte for byte). UTF-8 safe: never splits a multi-byte sequence.
std::string redact(std::string_view text, std::vector<Finding>* found = nullptr);

// Only payment card numbers (and the CVV/expiry phrases near them): what the
// journal applies to every string at ingest, whatever the profiles say, so
// that card data is never at rest. Returns nullopt when nothing changed
// (the common case, without allocating).
std::optional<std::string> redact_cards(std::string_view text);

bool luhn_valid(std::string_view digits); // digits only

// Profile transforms ---------------------------------------------------------

// Keeps the last `keep_last` characters (UTF-8 code points), replacing the
// others with '*': mask("07700900312", 4) == "*******0312". At least half of
// the characters are always masked, whatever keep_last says, so a short
// value is never revealed whole.
std::string mask(std::string_view value, int keep_last);

// A stable pseudonym: lowercase hex HMAC-SHA256(key, normalised value),
// where normalisation trims, lowercases, and removes spaces so that
// "QQ 12 34 56 C" and "qq123456c" give the same pseudonym.
std::string pseudonym(std::string_view key, std::string_view value);

// "L8 0ZZ" / "l80zz" / "SW1A 1AA" -> "L8" / "L8" / "SW1A" (the outward
// code); nullopt if not a UK postcode.
std::optional<std::string> postcode_district(std::string_view postcode);

// "2025-01-06", "2025-01-06T09:44:05Z", "06/01/2025" (UK day first) ->
// "2025-01"; nullopt if not a date.
std::optional<std::string> date_to_month(std::string_view date);

// Date of birth (same formats) -> age band on `today_ms` (Unix ms):
// "under 16", "16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+";
// nullopt if not a date or in the future.
std::optional<std::string> age_band(std::string_view date_of_birth, std::int64_t today_ms);

} // namespace switchboard::pii
