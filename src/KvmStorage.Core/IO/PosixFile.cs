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

    /// <summary>
    /// True when no directory entry (file, folder or link, dangling or not) is left at <paramref name="path"/>: a
    /// listing that met the entry and then failed to read it lost a race with a writer that removed it, which is a
    /// normal event for a lister, not an error to report.
    /// </summary>
    public static bool Vanished(string path) => !File.Exists(path) && !Directory.Exists(path) && new FileInfo(path).LinkTarget is null;
}
