namespace KvmStorage.Core.Images.Chains;

/// <summary>Stable error identifiers of <see cref="ImageRebaser"/>.</summary>
public static class RebaseErrorIds
{
    /// <summary>Only qcow2 images record a backing file that can be changed.</summary>
    public const string RebaseNotSupported = "RebaseNotSupported";

    /// <summary>The new backing file would make the chain loop back to the image itself.</summary>
    public const string RebaseWouldLoop = "RebaseWouldLoop";

    /// <summary>The new backing file is not allowed (a raw file outside every pool, a device).</summary>
    public const string BackingNotAllowed = "RebaseBackingNotAllowed";

    /// <summary>A safe rebase needs the current backing file to read what the guest sees today.</summary>
    public const string CurrentBackingMissing = "RebaseCurrentBackingMissing";
}
