using KvmStorage.Core.Errors;
using KvmStorage.Core.Names;

namespace KvmStorage.Core.Pools;

/// <summary>Which pool names are acceptable: <see cref="NameRules"/>, libvirt's rules and what a file name <c>&lt;name&gt;.xml</c> needs.</summary>
public static class PoolNames
{
    /// <summary>255 bytes of file name, less ".xml".</summary>
    public const int MaxLength = 251;

    public static void Validate(string? name)
    {
        string? problem = Check(name);
        if (problem is not null)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, PoolErrorIds.InvalidPoolName, $"'{Printable(name)}' is not a valid pool name: {problem}.", name);
        }
    }

    public static string? Check(string? name)
    {
        string? shared = NameRules.Check(name);
        if (shared is not null || name is null)
        {
            return shared;
        }

        if (NameRules.ByteCount(name) > MaxLength)
        {
            return $"it is longer than {MaxLength} bytes";
        }

        if (name.Contains('/', StringComparison.Ordinal))
        {
            return "it contains '/'";
        }

        if (name is "." or "..")
        {
            return "it is '.' or '..'";
        }

        if (name.StartsWith('.'))
        {
            return "it starts with '.' (a hidden file libvirt would skip)";
        }

        if (name.StartsWith('-'))
        {
            return "it starts with '-'";
        }

        return name.Trim().Length != name.Length ? "it starts or ends with white space" : null;
    }

    /// <summary>A name as it can be shown in a message (see <see cref="NameRules.Printable"/>).</summary>
    public static string Printable(string? name) => NameRules.Printable(name);
}
