#include "store/chunk_files.hpp"

#include "store/store.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <climits>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

namespace switchboard::store {

namespace {

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& file) {
    throw StoreError("chunk segment " + file.string() + ": " + what + ": " + std::strerror(errno));
}

void sync_dir(const std::filesystem::path& dir) {
    int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) return; // best effort: the files themselves are synced
    ::fsync(d);
    ::close(d);
}

} // namespace

ChunkFiles::~ChunkFiles() {
    for (auto& [seg, f] : fds_) ::close(f);
}

std::filesystem::path ChunkFiles::path(std::int64_t seg) const {
    char name[32];
    std::snprintf(name, sizeof name, "%08lld.seg", static_cast<long long>(seg));
    return dir_ / name;
}

int ChunkFiles::fd(std::int64_t seg, bool create) {
    auto it = fds_.find(seg);
    if (it != fds_.end()) return it->second;
    const auto file = path(seg);
    int f = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (f < 0 && errno == EACCES && !create) f = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0 && errno == ENOENT && create) {
        std::error_code ec;
        if (std::filesystem::create_directory(dir_, ec)) {
            ::chmod(dir_.c_str(), 0700);
            sync_dir(dir_.parent_path());
        }
        f = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (f >= 0) sync_dir(dir_);
    }
    if (f < 0) fail(create ? "cannot create" : "cannot open", file);
    if (fds_.size() >= kMaxOpen) { // the oldest segment is the least likely to be read again
        ::close(fds_.begin()->second);
        fds_.erase(fds_.begin());
    }
    fds_.emplace(seg, f);
    return f;
}

void ChunkFiles::open_for_append(std::int64_t seg, std::uint64_t end) {
    int f = fd(seg, true);
    struct stat st{};
    if (::fstat(f, &st) != 0) fail("cannot stat", path(seg));
    if (static_cast<std::uint64_t>(st.st_size) > end && ::ftruncate(f, static_cast<off_t>(end)) != 0)
        fail("cannot cut back", path(seg));
}

void ChunkFiles::write(std::int64_t seg, std::uint64_t offset, std::string_view bytes) {
    write(seg, offset, std::vector<std::string_view>{bytes});
}

void ChunkFiles::write(std::int64_t seg, std::uint64_t offset, const std::vector<std::string_view>& pieces) {
    int f = fd(seg, true);
    std::vector<iovec> iov;
    iov.reserve(std::min<std::size_t>(pieces.size(), IOV_MAX));
    std::size_t next = 0;
    while (next < pieces.size() || !iov.empty()) {
        while (next < pieces.size() && iov.size() < IOV_MAX) {
            if (!pieces[next].empty())
                iov.push_back({const_cast<char*>(pieces[next].data()), pieces[next].size()});
            ++next;
        }
        if (iov.empty()) break;
        ssize_t n = ::pwritev(f, iov.data(), static_cast<int>(iov.size()), static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot write", path(seg));
        }
        offset += static_cast<std::uint64_t>(n);
        // Drop what was written, a piece partly written kept for the rest.
        std::size_t done = static_cast<std::size_t>(n), k = 0;
        while (k < iov.size() && done >= iov[k].iov_len) done -= iov[k++].iov_len;
        if (k < iov.size()) {
            iov[k].iov_base = static_cast<char*>(iov[k].iov_base) + done;
            iov[k].iov_len -= done;
        }
        iov.erase(iov.begin(), iov.begin() + static_cast<std::ptrdiff_t>(k));
    }
}

void ChunkFiles::start_writeback(std::int64_t seg, std::uint64_t offset, std::uint64_t len) {
    if (len == 0) return;
    auto it = fds_.find(seg);
    if (it == fds_.end()) return;
    (void)::sync_file_range(it->second, static_cast<off_t>(offset), static_cast<off_t>(len), SYNC_FILE_RANGE_WRITE);
}

void ChunkFiles::sync(std::int64_t seg) {
    if (::fdatasync(fd(seg, false)) != 0) fail("cannot sync", path(seg));
}

void ChunkFiles::read(std::int64_t seg, std::uint64_t offset, std::uint64_t len, std::int64_t chunk,
                      char* out) {
    int f = fd(seg, false);
    std::uint64_t got = 0;
    while (got < len) {
        ssize_t n = ::pread(f, out + got, len - got, static_cast<off_t>(offset + got));
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot read chunk " + std::to_string(chunk), path(seg));
        }
        if (n == 0) {
            errno = 0;
            throw StoreError("chunk segment " + path(seg).string() + " is shorter than the journal says: chunk " +
                             std::to_string(chunk) + " has " + std::to_string(got) + " of its " +
                             std::to_string(len) + " bytes at offset " + std::to_string(offset));
        }
        got += static_cast<std::uint64_t>(n);
    }
}

void ChunkFiles::punch(std::int64_t seg, std::uint64_t offset, std::uint64_t len) {
    if (len == 0) return;
    int f;
    try {
        f = fd(seg, false);
    } catch (const StoreError&) {
        if (!std::filesystem::exists(path(seg))) return; // removed already: nothing is left to punch
        throw;
    }
    if (::fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(len)) == 0)
        return;
    if (errno != EOPNOTSUPP && errno != ENOSYS) fail("cannot punch out a deleted chunk", path(seg));
    // A file system without holes: overwrite with zeros (no further than
    // the end of the file, which must not grow).
    struct stat st{};
    if (::fstat(f, &st) != 0) fail("cannot stat", path(seg));
    const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
    if (offset >= size) return;
    len = std::min(len, size - offset);
    static const std::vector<char> zeros(1 << 16, 0);
    while (len > 0) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(len, zeros.size()));
        write(seg, offset, std::string_view(zeros.data(), n));
        offset += n;
        len -= n;
    }
}

void ChunkFiles::remove(std::int64_t seg) {
    auto it = fds_.find(seg);
    if (it != fds_.end()) {
        ::close(it->second);
        fds_.erase(it);
    }
    if (::unlink(path(seg).c_str()) != 0 && errno != ENOENT) fail("cannot remove", path(seg));
}

} // namespace switchboard::store
