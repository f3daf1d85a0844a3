using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Images.Block;

/// <summary>Error ids of the block readers (besides the inspector's, which opening may also raise).</summary>
public static class BlockErrorIds
{
    /// <summary>The image is encrypted (qcow2 AES or LUKS); reading it needs a secret this layer does not take (NotSupported).</summary>
    public const string ImageEncrypted = "ImageEncrypted";

    /// <summary>The qcow2 image keeps its data in an external data file (NotSupported).</summary>
    public const string ExternalDataFileNotSupported = "ExternalDataFileNotSupported";

    /// <summary>The format, or a variant of it, has no block reader (NotSupported).</summary>
    public const string FormatNotReadable = "BlockFormatNotReadable";

    /// <summary>A mapping table (L1/L2, grain directory/table, block map, BAT) holds an impossible entry (InvalidData).</summary>
    public const string InvalidMapping = "InvalidImageMapping";

    /// <summary>A compressed cluster or grain does not decompress to its size (InvalidData).</summary>
    public const string InvalidCompressedData = "InvalidCompressedData";

    /// <summary>
    /// One table entry is named by several entries of the table above it (two qcow2 L1 entries sharing one L2 table,
    /// two vmdk grain directory entries sharing a grain table): impossible in a sound image, and reading it would cost
    /// what the image declares rather than what it holds (InvalidData).
    /// </summary>
    public const string SharedMappingTable = "SharedImageMappingTable";

    /// <summary>A metadata table is larger than the reader accepts (InvalidData).</summary>
    public const string TableTooLarge = "ImageTableTooLarge";

    /// <summary>A vmdk descriptor names an extent outside its own folder (InvalidData).</summary>
    public const string ExtentOutsideFolder = "VmdkExtentOutsideFolder";

    /// <summary>A vhdx image has a log that must be replayed first (NotSupported; opening it in qemu read-write replays it).</summary>
    public const string VhdxLogNotEmpty = "VhdxLogNotEmpty";

    /// <summary>A read or extent query reaches beyond the image's size (InvalidArgument).</summary>
    public const string RangeOutOfBounds = "BlockRangeOutOfBounds";
}

internal static class BlockErrors
{
    public static KvmStorageException Mapping(string path, string message) =>
        new(ErrorKind.InvalidData, BlockErrorIds.InvalidMapping, $"'{path}': {message}", path);

    public static KvmStorageException NotSupported(string errorId, string path, string message) =>
        new(ErrorKind.NotSupported, errorId, $"'{path}': {message}", path);

    public static KvmStorageException Invalid(string errorId, string path, string message, Exception? inner = null) =>
        new(ErrorKind.InvalidData, errorId, $"'{path}': {message}", path, inner);
}
