#include "util/sha256.hpp"

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

namespace switchboard {

std::optional<std::string> sha256_file(const std::filesystem::path& file, std::string& error) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        error = std::strerror(errno);
        return std::nullopt;
    }
    Poco::SHA2Engine engine(Poco::SHA2Engine::SHA_256);
    std::vector<char> buf(1 << 16);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        if (in.gcount() > 0) engine.update(buf.data(), static_cast<unsigned>(in.gcount()));
    }
    if (in.bad()) {
        error = "read error";
        return std::nullopt;
    }
    return Poco::DigestEngine::digestToHex(engine.digest());
}

} // namespace switchboard
