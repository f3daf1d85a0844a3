using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Images;

/// <summary>Stable error identifiers of the image engine (inspect, create, resize, locks).</summary>
public static class ImageErrorIds
{
    // Malformed or unsupported images (InvalidData / NotSupported).
    public const string HeaderTruncated = "ImageHeaderTruncated";
    public const string InvalidHeader = "InvalidImageHeader";
    public const string UnsupportedVersion = "UnsupportedImageVersion";
    public const string InvalidClusterSize = "InvalidClusterSize";
    public const string InvalidHeaderLength = "InvalidHeaderLength";
    public const string InvalidRefcountOrder = "InvalidRefcountOrder";
    public const string ImageTooLarge = "ImageTooLarge";
    public const string L1TableTooLarge = "L1TableTooLarge";
    public const string L1TableTooSmall = "L1TableTooSmall";
    public const string RefcountTableTooLarge = "RefcountTableTooLarge";
    public const string TableOutOfBounds = "ImageTableOutOfBounds";
    public const string InvalidHeaderExtension = "InvalidHeaderExtension";
    public const string InvalidBackingName = "InvalidBackingFileName";
    public const string InvalidSnapshotTable = "InvalidSnapshotTable";
    public const string TooManySnapshots = "TooManySnapshots";
    public const string InvalidCompressionType = "InvalidCompressionType";
    public const string InvalidEncryptionMethod = "InvalidEncryptionMethod";
    public const string UnsupportedFeature = "UnsupportedImageFeature";
    public const string InvalidMetadata = "InvalidImageMetadata";

    // Files and backing chains.
    public const string ImageNotFound = "ImageNotFound";
    public const string ImageUnreadable = "ImageUnreadable";
    public const string BackingFileNotFound = "BackingFileNotFound";
    public const string BackingFileNotRegular = "BackingFileNotRegular";

    /// <summary>A backing file a guest must not see: a raw or unrecognised file outside every storage pool.</summary>
    public const string BackingFileNotAllowed = "BackingFileNotAllowed";

    /// <summary>A backing name that resolves (lexically or through a link) outside the host root.</summary>
    public const string BackingFileOutsideRoot = "BackingFileOutsideRoot";
    public const string BackingChainLoop = "BackingChainLoop";
    public const string BackingChainTooDeep = "BackingChainTooDeep";

    // Create and resize.
    public const string ImageExists = "ImageAlreadyExists";
    public const string InvalidCreateOptions = "InvalidImageCreateOptions";
    public const string InvalidImageSize = "InvalidImageSize";
    public const string UnsupportedFormat = "UnsupportedImageFormat";
    public const string UnsupportedOperation = "UnsupportedImageOperation";
    public const string ShrinkNotAllowed = "ShrinkNotAllowed";
    public const string ShrinkWouldLoseData = "ShrinkWouldLoseData";
    public const string ShrinkWithSnapshots = "ShrinkWithInternalSnapshots";
    public const string ImageDirty = "ImageDirty";
    public const string ImageCorrupt = "ImageCorrupt";

    /// <summary>A write refused because the image's own check finds errors that make writing unsafe.</summary>
    public const string ImageCheckFailed = "ImageCheckFailed";
    public const string ImageWriteFailed = "ImageWriteFailed";

    /// <summary>A write the engine was about to make would have landed on the image's own metadata (qemu's overlap check).</summary>
    public const string MetadataOverlap = "ImageMetadataOverlap";

    // In-place writes of guest data (Qcow2DataWriter).
    public const string ExtendedL2NotWritable = "ExtendedL2NotWritable";
    public const string BitmapsNotWritable = "PersistentBitmapsNotWritable";

    // Internal snapshots.
    public const string SnapshotNotFound = "SnapshotNotFound";
    public const string SnapshotNameExists = "SnapshotNameAlreadyExists";
    public const string InvalidSnapshotName = "InvalidSnapshotName";
    public const string SnapshotsNotSupported = "SnapshotsNotSupported";
    public const string SnapshotLimitReached = "SnapshotLimitReached";
    public const string SnapshotRefcountOverflow = "SnapshotRefcountOverflow";

    // Locks.
    public const string ImageInUse = "ImageInUse";
}

/// <summary>Factory of the image engine's typed exceptions, so messages and kinds stay consistent.</summary>
internal static class ImageErrors
{
    /// <summary>A qcow2 image with the dirty bit set: its refcounts may be stale, so nothing writes it before a repair.</summary>
    public static KvmStorageException Dirty(string path) =>
        new(ErrorKind.InvalidOperation, ImageErrorIds.ImageDirty, $"'{path}' has the dirty bit set (refcounts may be stale); repair it with Test-Volume -Repair All (qemu-img check -r all) first.", path);

    /// <summary>A qcow2 image marked corrupt: qemu and the module refuse to write it before a repair.</summary>
    public static KvmStorageException MarkedCorrupt(string path) =>
        new(ErrorKind.InvalidOperation, ImageErrorIds.ImageCorrupt, $"'{path}' is marked corrupt; repair it with Test-Volume -Repair All (qemu-img check -r all) first.", path);

    public static KvmStorageException Invalid(string errorId, string path, string message) =>
        new(ErrorKind.InvalidData, errorId, $"'{path}': {message}", path);

    public static KvmStorageException NotSupported(string errorId, string path, string message) =>
        new(ErrorKind.NotSupported, errorId, $"'{path}': {message}", path);

    public static KvmStorageException Argument(string errorId, string message, object? target = null) =>
        new(ErrorKind.InvalidArgument, errorId, message, target);

    /// <summary>Maps the I/O exceptions of opening or reading a file to the typed error.</summary>
    public static KvmStorageException FromIo(string path, Exception exception) => exception switch
    {
        FileNotFoundException or DirectoryNotFoundException =>
            new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.ImageNotFound, $"The image '{path}' does not exist.", path, exception),
        UnauthorizedAccessException =>
            new KvmStorageException(ErrorKind.PermissionDenied, ImageErrorIds.ImageUnreadable, $"Access to '{path}' is denied.", path, exception),
        _ => new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageUnreadable, $"I/O error on '{path}': {exception.Message}", path, exception),
    };
}
