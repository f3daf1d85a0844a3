using System.Runtime.InteropServices;

namespace KvmStorage.Core.IO;

/// <summary>Ownership changes, which .NET has no API for.</summary>
public static class PosixFile
{
    /// <summary>Sets the owner and/or group; -1 leaves one unchanged, as chown(2) does.</summary>
    public static void SetOwner(string path, int uid, int gid)
    {
        if (uid < 0 && gid < 0)
        {
            return;
        }

        if (NativeMethods.chown(path, uid, gid) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new UnauthorizedAccessException($"Cannot change the owner of '{path}' to {uid}:{gid}: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
    }

    public static bool IsRoot => NativeMethods.geteuid() == 0;

    /// <summary><c>realpath(3)</c>: the absolute path with every link, <c>.</c> and <c>..</c> resolved; null when a part is missing.</summary>
    public static string? RealPath(string path)
    {
        nint resolved = NativeMethods.realpath(path, 0);
        if (resolved == 0)
        {
            return null;
        }

        try
        {
            return System.Runtime.InteropServices.Marshal.PtrToStringUTF8(resolved);
        }
        finally
        {
            NativeMethods.free(resolved);
        }
    }

    /// <summary>
    /// The real path of <paramref name="path"/>, or for a path whose last parts do not exist yet the real path of its
    /// deepest existing ancestor with the missing parts appended: where a file created at <paramref name="path"/>
    /// would really land.
    /// </summary>
    public static string RealPathOfNew(string path)
    {
        string full = Path.GetFullPath(path);
        var missing = new Stack<string>();
        string? current = full;
        while (current is not null)
        {
            if (RealPath(current) is { } real)
            {
                foreach (string part in missing)
                {
                    real = Path.Combine(real, part);
                }

                return real;
            }

            missing.Push(Path.GetFileName(current));
            current = Path.GetDirectoryName(current);
        }

        return full;
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="folder"/> or lies below it (both absolute, normalised).</summary>
    public static bool IsUnder(string path, string folder)
    {
        if (folder == "/")
        {
            return path.StartsWith('/');
        }

        string trimmed = folder.TrimEnd('/');
        return path == trimmed || path.StartsWith(trimmed + "/", StringComparison.Ordinal);
    }

    /// <summary>
    /// True when no directory entry (file, folder or link, dangling or not) is left at <paramref name="path"/>: a
    /// listing that met the entry and then failed to read it lost a race with a writer that removed it, which is a
    /// normal event for a lister, not an error to report.
    /// </summary>
    public static bool Vanished(string path) => !File.Exists(path) && !Directory.Exists(path) && new FileInfo(path).LinkTarget is null;
}
