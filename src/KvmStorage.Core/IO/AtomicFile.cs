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

    public static void WriteAllText(string path, string content, UnixFileMode mode)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string temp = Path.Combine(directory, TempPrefix + Path.GetFileName(path) + "." + RandomNumberGenerator.GetHexString(8, lowercase: true));
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
                byte[] bytes = new System.Text.UTF8Encoding(false).GetBytes(content);
                stream.Write(bytes);
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
