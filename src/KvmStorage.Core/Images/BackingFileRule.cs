namespace KvmStorage.Core.Images;

/// <summary>
/// How the backing-file names recorded in images become files on this machine, and which of those files may be
/// read as backing files at all. Every backing chain the engine opens (inspection, block readers, commit, rebase,
/// create) passes through one rule: the host's rule (<c>Access.HostBackingRule</c>) resolves names under the host
/// root and refuses files a guest must never see; <see cref="Unrestricted"/> is qemu's own behaviour, for callers
/// that work on plain files (the engine's tests).
/// </summary>
public class BackingFileRule
{
    /// <summary>qemu's semantics: absolute names as they are, relative ones against the image's folder, nothing refused.</summary>
    public static BackingFileRule Unrestricted { get; } = new();

    /// <summary>
    /// The file that <paramref name="backingName"/>, recorded in <paramref name="imagePath"/>, names on this machine
    /// (qemu's <c>path_combine</c>: a relative name is relative to the image's folder). Network names (<c>nbd://</c>)
    /// are returned unchanged.
    /// </summary>
    public virtual string Resolve(string imagePath, string backingName)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        ArgumentNullException.ThrowIfNull(backingName);
        if (backingName.Contains("://", StringComparison.Ordinal) || Path.IsPathRooted(backingName))
        {
            return backingName;
        }

        string? directory = Path.GetDirectoryName(imagePath);
        return string.IsNullOrEmpty(directory) ? backingName : directory.TrimEnd('/') + "/" + backingName;
    }

    /// <summary>
    /// Called with every resolved backing file before it is looked at (even before its existence is tested); throws a
    /// typed <see cref="Errors.KvmStorageException"/> with <see cref="ImageErrorIds.BackingFileNotAllowed"/> or
    /// <see cref="ImageErrorIds.BackingFileOutsideRoot"/> to refuse it. The default allows everything.
    /// </summary>
    public virtual void Check(string imagePath, string backingName, string resolvedPath)
    {
    }

    /// <summary>True for the refusals of <see cref="Check"/>, which a listing reports on the image instead of failing.</summary>
    public static bool IsRefusal(Errors.KvmStorageException exception) =>
        exception?.ErrorId is ImageErrorIds.BackingFileNotAllowed or ImageErrorIds.BackingFileOutsideRoot;
}
