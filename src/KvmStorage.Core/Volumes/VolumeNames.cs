using KvmStorage.Core.Images;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Names;

namespace KvmStorage.Core.Volumes;

/// <summary>Volume names are file names inside a pool folder (<see cref="NameRules"/>): nothing that could point elsewhere.</summary>
public static class VolumeNames
{
    public const int MaxBytes = NameRules.MaxFileNameBytes;

    public static void Validate(string? name)
    {
        string? problem = Check(name);
        if (problem is not null)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.InvalidVolumeName, $"'{NameRules.Printable(name)}' is not a valid volume name: {problem}.", name);
        }
    }

    public static string? Check(string? name)
    {
        string? shared = NameRules.Check(name);
        if (shared is not null || name is null)
        {
            return shared;
        }

        if (NameRules.ByteCount(name) > MaxBytes)
        {
            return $"it is longer than {MaxBytes} bytes";
        }

        if (name.Contains('/', StringComparison.Ordinal))
        {
            return "it contains '/' (a volume is a file directly in the pool folder)";
        }

        if (name is "." or "..")
        {
            return "it is '.' or '..'";
        }

        if (name.StartsWith('-'))
        {
            return "it starts with '-'";
        }

        return name.StartsWith(AtomicFile.TempPrefix, StringComparison.Ordinal) ? "the prefix is reserved for the module's temporary files" : null;
    }

    /// <summary>The extension the module gives a new image of <paramref name="format"/>: .qcow2, .raw, .vmdk, .vhdx, .vhd (vpc), .vdi.</summary>
    public static string ExtensionOf(Images.ImageFormat format) => format == Images.ImageFormat.Vpc ? ".vhd" : "." + format.ToQemuName();

    /// <summary>The format a file name's extension names (.qcow2, .raw, .img, .vmdk, .vhdx, .vhd, .vdi), or null for any other name.</summary>
    public static Images.ImageFormat? FormatOfExtension(string name) => Path.GetExtension(name ?? string.Empty).ToLowerInvariant() switch
    {
        ".qcow2" => Images.ImageFormat.Qcow2,
        ".raw" or ".img" => Images.ImageFormat.Raw,

        // A LUKS file: libvirt's raw volume with LUKS encryption.
        ".luks" => Images.ImageFormat.Raw,
        ".vmdk" => Images.ImageFormat.Vmdk,
        ".vhdx" => Images.ImageFormat.Vhdx,
        ".vhd" => Images.ImageFormat.Vpc,
        ".vdi" => Images.ImageFormat.Vdi,
        _ => null,
    };

    /// <summary>
    /// The format of a new image named <paramref name="name"/>: <paramref name="requested"/> when given, else the one
    /// its extension names (<see cref="FormatOfExtension"/>), else <paramref name="fallback"/>. A name whose extension
    /// says one format for certain (.qcow2, .raw, .vmdk, .vhdx, .vhd, .vdi) while another is asked for is refused, so a file never lies
    /// about its format; .img is raw unless told otherwise, since qcow2 images named .img are common.
    /// </summary>
    /// <exception cref="KvmStorageException"><c>FormatExtensionMismatch</c>.</exception>
    public static Images.ImageFormat FormatFor(string name, Images.ImageFormat? requested, Images.ImageFormat fallback)
    {
        Images.ImageFormat? named = FormatOfExtension(name);
        if (requested is not { } asked)
        {
            return named ?? fallback;
        }

        bool certain = named is not null && !Path.GetExtension(name).Equals(".img", StringComparison.OrdinalIgnoreCase);
        if (certain && named != asked)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidArgument,
                VolumeErrorIds.FormatExtensionMismatch,
                $"'{name}' names a {named!.Value.ToQemuName()} image, but the format asked for is {asked.ToQemuName()}: name it {Path.GetFileNameWithoutExtension(name)}{ExtensionOf(asked)} (or .img), or leave the format to the name.",
                name);
        }

        return asked;
    }
}
