#pragma once

// The segment files that hold the journal's chunk bodies, beside the
// database: <journal>-chunks/NNNNNNNN.seg (the directory 0700, the files
// 0600, like the rest of the data directory).
//
// A chunk body is written once, appended to the current segment, and read
// back by offset; the database keeps where it is. Kept in SQLite, each body
// was written twice (the write-ahead log, then its checkpoint), read back
// once by the checkpoint and copied twice more on the way in (the record
// SQLite assembles, its pages): about a fifth of the journal writer's time.
//
// A deleted body is punched out of its file (fallocate PUNCH_HOLE: the range
// reads as zeros and its blocks are freed; where the file system cannot,
// it is overwritten with zeros), so that no byte of it lingers; a segment
// none of whose chunks is left is removed. Which ranges are live, and which
// are to be punched, is the database's to say (sqlite_store.cpp): this class
// only does the file work, and is not thread-safe (the store's mutex guards
// it).

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::store {

class ChunkFiles {
public:
    explicit ChunkFiles(std::filesystem::path dir) : dir_(std::move(dir)) {}
    ~ChunkFiles();
    ChunkFiles(const ChunkFiles&) = delete;
    ChunkFiles& operator=(const ChunkFiles&) = delete;

    const std::filesystem::path& dir() const { return dir_; }
    std::filesystem::path path(std::int64_t seg) const;

    // Opens segment `seg` for appending at `end`, creating it (and the
    // directory) if need be, and cutting off whatever lies past `end` (what
    // a transaction that did not commit wrote).
    void open_for_append(std::int64_t seg, std::uint64_t end);
    // Writes all of `bytes` at `offset`.
    void write(std::int64_t seg, std::uint64_t offset, std::string_view bytes);
    // Writes the pieces one after the other from `offset` (pwritev).
    void write(std::int64_t seg, std::uint64_t offset, const std::vector<std::string_view>& pieces);
    // fdatasync.
    void sync(std::int64_t seg);
    // Asks the kernel to start writing [offset, offset+len) to the disk now,
    // without waiting: the sync() before the commit then has less left to
    // wait for. A hint only (errors ignored); sync() is what makes it durable.
    void start_writeback(std::int64_t seg, std::uint64_t offset, std::uint64_t len);
    // Reads `len` bytes at `offset` into `out`; throws StoreError naming the
    // file and `chunk` if they are not all there.
    void read(std::int64_t seg, std::uint64_t offset, std::uint64_t len, std::int64_t chunk, char* out);
    // Makes [offset, offset + len) read as zeros and frees its blocks.
    void punch(std::int64_t seg, std::uint64_t offset, std::uint64_t len);
    // Removes the segment's file (no error if it is gone already).
    void remove(std::int64_t seg);

    // Files kept open at most: a long backlog spans many segments, and
    // reading it must not run out of file descriptors.
    static constexpr std::size_t kMaxOpen = 16;

private:
    int fd(std::int64_t seg, bool create);

    std::filesystem::path dir_;
    std::map<std::int64_t, int> fds_;
};

} // namespace switchboard::store
