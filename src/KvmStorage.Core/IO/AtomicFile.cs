using Microsoft.Win32.SafeHandles;
using System.Security.Cryptography;

namespace KvmStorage.Core.IO;

/// <summary>
/// Writes a whole file so that readers and crashes see either the old or the new content: a hidden temporary
/// file in the same folder, fsync, rename over the final name, fsync of the folder.
/// </summary>
public static class AtomicFile
{
    /// <summary>The prefix of the module's own temporary files; listings skip them.</summary>
    public const string TempPrefix = ".kvmstorage-tmp-";

    public static void WriteAllText(string path, string content, UnixFileMode mode) =>
        WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(content), mode);

    /// <summary>
    /// Replaces <paramref name="path"/> atomically: written and flushed under a hidden name created with
    /// <paramref name="mode"/> (never wider, whatever the umask), then renamed over it.
    /// </summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> content, UnixFileMode mode)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string temp = TempPathFor(path);
        try
        {
            var options = new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                Share = FileShare.None,
                UnixCreateMode = mode,
            };
            using (var stream = new FileStream(temp, options))
            {
                stream.Write(content);
                stream.Flush(flushToDisk: true);
            }

            // The umask may have narrowed the mode at creation; make it exact.
            File.SetUnixFileMode(temp, mode);
            File.Move(temp, path, overwrite: true);
            SyncDirectory(directory);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>A fresh hidden temporary name beside <paramref name="path"/> (same folder, so the final rename is atomic).</summary>
    public static string TempPathFor(string path)
    {
        string full = Path.GetFullPath(path);
        string suffix = "." + RandomNumberGenerator.GetHexString(8, lowercase: true);

        // The final name may use all of NAME_MAX: the temporary keeps only as much of it as still fits.
        int room = Names.NameRules.MaxFileNameBytes - System.Text.Encoding.UTF8.GetByteCount(TempPrefix + suffix);
        return Path.Combine(Path.GetDirectoryName(full)!, TempPrefix + Utf8Prefix(Path.GetFileName(full), room) + suffix);
    }

    /// <summary>The longest start of <paramref name="name"/> of at most <paramref name="maxBytes"/> UTF-8 bytes, never half a surrogate pair.</summary>
    private static string Utf8Prefix(string name, int maxBytes)
    {
        int bytes = 0;
        int i = 0;
        while (i < name.Length)
        {
            int width = char.IsSurrogatePair(name, i) ? 2 : 1;
            int size = System.Text.Encoding.UTF8.GetByteCount(name.AsSpan(i, width));
            if (bytes + size > maxBytes)
            {
                break;
            }

            bytes += size;
            i += width;
        }

        return name[..i];
    }

    /// <summary>
    /// Gives a finished temporary file its final name without ever replacing an existing file
    /// (<c>renameat2(RENAME_NOREPLACE)</c>), then makes the rename durable.
    /// </summary>
    /// <exception cref="IOException">The destination exists (HResult EEXIST) or the rename failed.</exception>
    public static void MoveNoReplace(string temp, string path)
    {
        if (NativeMethods.renameat2(NativeMethods.AT_FDCWD, temp, NativeMethods.AT_FDCWD, path, NativeMethods.RENAME_NOREPLACE) != 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno == NativeMethods.EEXIST)
            {
                throw new IOException($"'{path}' already exists.", errno);
            }

            // File systems without RENAME_NOREPLACE: .NET's no-overwrite move (link, then unlink).
            File.Move(temp, path, overwrite: false);
        }

        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>
    /// Creates the temporary file <paramref name="temp"/> (never an existing one) for a writer that renames it over its
    /// final name when done, and marks it as alive with a <em>shared</em> flock for as long as the stream is open.
    /// <see cref="RemoveAbandonedTempFiles"/> deletes only temporaries whose exclusive flock it can take, that is whose
    /// writer died. The lock is shared, not exclusive, because it outlives the rename: .NET takes a shared flock on
    /// every file it opens for reading, and an exclusive one would make a reader that opens the finished file in the
    /// moment between the rename and the writer's close fail with "being used by another process".
    /// </summary>
    /// <remarks>
    /// Creating a file and locking it are two steps, and a cleaner in another process can take the new file for
    /// abandoned between them. The two sides follow the lock-file protocol: the cleaner unlinks only while it holds
    /// the exclusive lock and only the file it locked; the creator, once it holds its shared lock, checks that its
    /// name still leads to the file it created, and starts again if a cleaner took it.
    /// </remarks>
    /// <exception cref="IOException">The file exists or cannot be created or locked (nothing is left behind).</exception>
    public static FileStream CreateTemp(string temp, UnixFileMode mode)
    {
        const int attempts = 200;
        bool createdBefore = false;
        for (int attempt = 0; attempt < attempts; attempt++)
        {
            int fd = NativeMethods.open(temp, NativeMethods.O_RDWR | NativeMethods.O_CREAT | NativeMethods.O_EXCL | NativeMethods.O_CLOEXEC, (int)mode);
            if (fd < 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                if (errno == NativeMethods.EEXIST && createdBefore)
                {
                    // A cleaner holds the file we made a moment ago and is about to unlink it.
                    Thread.Sleep(1);
                    continue;
                }

                throw errno == NativeMethods.EEXIST
                    ? new IOException($"'{temp}' already exists.", errno)
                    : ErrnoException($"Cannot create the temporary file '{temp}'", errno);
            }

            createdBefore = true;

            // Explicit, because .NET skips its advisory lock on some file systems (NFS, CIFS) and when
            // DOTNET_SYSTEM_IO_DISABLEFILELOCKING is set; and needed here anyway, since a stream made from a handle
            // takes no lock of its own.
            if (NativeMethods.flock(fd, NativeMethods.LOCK_SH | NativeMethods.LOCK_NB) != 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                _ = NativeMethods.close(fd);
                if (errno == NativeMethods.EWOULDBLOCK)
                {
                    // A cleaner holds it exclusively: it unlinks it before letting go. Make a new one.
                    continue;
                }

                TryDelete(temp);
                throw ErrnoException($"Cannot lock the temporary file '{temp}'", errno);
            }

            if (!SameFile(fd, temp))
            {
                // A cleaner locked and unlinked it before our lock: the name is no longer ours.
                _ = NativeMethods.close(fd);
                continue;
            }

            return new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.ReadWrite);
        }

        throw new IOException($"Cannot create the temporary file '{temp}': another process kept removing it.");
    }

    /// <summary>
    /// Deletes the temporary files in <paramref name="directory"/> whose writer died (a killed New-Volume): their
    /// exclusive flock is free. A temporary still being written keeps its shared lock (<see cref="CreateTemp"/>) and is
    /// left alone.
    /// </summary>
    /// <returns>How many files were removed.</returns>
    public static int RemoveAbandonedTempFiles(string directory)
    {
        if (!Directory.Exists(directory))
        {
            return 0;
        }

        int removed = 0;
        foreach (string file in Directory.EnumerateFiles(directory, TempPrefix + "*"))
        {
            if (new FileInfo(file).LinkTarget is not null)
            {
                continue;
            }

            int fd = NativeMethods.open(file, NativeMethods.O_CLOEXEC | NativeMethods.O_NOFOLLOW);
            if (fd < 0)
            {
                continue;
            }

            try
            {
                // Unlinked while the exclusive lock is held, and only if the name still leads to the locked file: a
                // writer that creates the file between our open and our lock sees the unlink and starts again, and a
                // writer that renamed it to its final name in the meantime keeps its image.
                if (NativeMethods.flock(fd, NativeMethods.LOCK_EX | NativeMethods.LOCK_NB) == 0 && SameFile(fd, file))
                {
                    TryDelete(file);
                    removed++;
                }
            }
            finally
            {
                _ = NativeMethods.close(fd);
            }
        }

        if (removed > 0)
        {
            SyncDirectory(directory);
        }

        return removed;
    }

    /// <summary>
    /// True while the process that made the temporary <paramref name="temp"/> with <see cref="CreateTemp"/> still holds
    /// it open (its shared flock stops an exclusive one), and for a file that cannot be opened to find out.
    /// </summary>
    public static bool IsWriterAlive(string temp)
    {
        int fd = NativeMethods.open(temp, NativeMethods.O_CLOEXEC | NativeMethods.O_NOFOLLOW);
        if (fd < 0)
        {
            return true;
        }

        try
        {
            // Taken and dropped with the descriptor: only a probe.
            return NativeMethods.flock(fd, NativeMethods.LOCK_EX | NativeMethods.LOCK_NB) != 0;
        }
        finally
        {
            _ = NativeMethods.close(fd);
        }
    }

    /// <summary>True if <paramref name="path"/> (not followed if a link) is the file open as <paramref name="fd"/>.</summary>
    private static unsafe bool SameFile(int fd, string path)
    {
        byte* open = stackalloc byte[256];
        byte* named = stackalloc byte[256];
        if (NativeMethods.statx(fd, string.Empty, NativeMethods.AT_EMPTY_PATH, NativeMethods.STATX_BASIC_STATS, open) != 0
            || NativeMethods.statx(NativeMethods.AT_FDCWD, path, NativeMethods.AT_SYMLINK_NOFOLLOW, NativeMethods.STATX_BASIC_STATS, named) != 0)
        {
            return false;
        }

        // struct statx: stx_ino at 32, stx_dev_major and stx_dev_minor at 136 and 140.
        return *(ulong*)(open + 32) == *(ulong*)(named + 32)
            && *(ulong*)(open + 136) == *(ulong*)(named + 136);
    }

    private static IOException ErrnoException(string what, int errno) =>
        new($"{what}: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}", errno);

    /// <summary>Makes a rename or a new directory entry durable.</summary>
    public static void SyncDirectory(string directory)
    {
        int fd = NativeMethods.open(directory, 0 /* O_RDONLY */);
        if (fd < 0)
        {
            return;
        }

        _ = NativeMethods.fsync(fd);
        _ = NativeMethods.close(fd);
    }

    /// <summary>Removes temporary files left in <paramref name="directory"/> by a process that died mid-write.</summary>
    public static void RemoveStaleTempFiles(string directory, TimeSpan olderThan)
    {
        if (!Directory.Exists(directory))
        {
            return;
        }

        foreach (string file in Directory.EnumerateFiles(directory, TempPrefix + "*"))
        {
            if (DateTime.UtcNow - File.GetLastWriteTimeUtc(file) > olderThan)
            {
                TryDelete(file);
            }
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
