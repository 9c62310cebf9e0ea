using System.Security.Cryptography;
using System.Text;
using Sidekick.Cli;

namespace Sidekick.Security;

/// <summary>
/// Reads a PEM private key: PKCS#1 RSA, SEC1 EC or PKCS#8, plain or encrypted. Encrypted keys come in two
/// formats: PKCS#8 <c>ENCRYPTED PRIVATE KEY</c> (.NET reads it) and the legacy OpenSSL format with
/// <c>Proc-Type: 4,ENCRYPTED</c> and <c>DEK-Info</c> headers (written by <c>openssl genrsa -aes256</c> or
/// <c>-traditional</c>), which .NET does not read, so it is decrypted here: the key is derived with OpenSSL's
/// EVP_BytesToKey (MD5, one iteration, salt = first 8 bytes of the IV) and the body is AES- or 3DES-CBC.
/// </summary>
internal static class PemKeyReader
{
    public static AsymmetricAlgorithm Read(string path, string? password)
    {
        var pem = FileText.Read(path, "the private key");
        List<PemBlock> blocks;
        try
        {
            blocks = PemBlock.All(pem);
        }
        catch (FormatException)
        {
            throw new FatalException($"the private key {path} is not readable: a PEM block is not valid base64");
        }

        var keyBlocks = blocks.Where(b => b.Label.EndsWith("PRIVATE KEY", StringComparison.Ordinal)).ToList();
        if (keyBlocks.Count == 0)
        {
            throw new FatalException($"the private key {path} is not readable: no PEM private key block found");
        }

        if (keyBlocks.Count > 1)
        {
            throw new FatalException($"the private key {path} contains additional data: expected exactly one private key");
        }

        var block = keyBlocks[0];
        try
        {
            if (block.Label == "ENCRYPTED PRIVATE KEY")
            {
                RequirePassword(path, password);
                return ImportPkcs8Encrypted(block.Body, password!);
            }

            if (block.Headers.TryGetValue("Proc-Type", out var procType) && procType.Contains("ENCRYPTED", StringComparison.Ordinal))
            {
                RequirePassword(path, password);
                var der = DecryptLegacy(block, password!, path);
                return Import(block.Label, der);
            }

            return Import(block.Label, block.Body);
        }
        catch (CryptographicException ex)
        {
            throw new FatalException(password is null
                ? $"unable to load private key {path}: {ex.Message}"
                : $"unable to decrypt private key {path}: wrong key password or damaged key ({ex.Message})");
        }
    }

    private static void RequirePassword(string path, string? password)
    {
        if (string.IsNullOrEmpty(password))
        {
            throw new FatalException($"the private key {path} is encrypted, please give its password with --key-password-file, {KeyPassword.Variable} or --key-password");
        }
    }

    private static AsymmetricAlgorithm Import(string label, byte[] der)
    {
        switch (label)
        {
            case "RSA PRIVATE KEY":
                var rsa = RSA.Create();
                rsa.ImportRSAPrivateKey(der, out _);
                return rsa;
            case "EC PRIVATE KEY":
                var ec = ECDsa.Create();
                ec.ImportECPrivateKey(der, out _);
                return ec;
            default:
                return ImportPkcs8(der);
        }
    }

    private static AsymmetricAlgorithm ImportPkcs8(byte[] der)
    {
        try
        {
            var rsa = RSA.Create();
            rsa.ImportPkcs8PrivateKey(der, out _);
            return rsa;
        }
        catch (CryptographicException)
        {
            var ec = ECDsa.Create();
            ec.ImportPkcs8PrivateKey(der, out _);
            return ec;
        }
    }

    private static AsymmetricAlgorithm ImportPkcs8Encrypted(byte[] der, string password)
    {
        try
        {
            var rsa = RSA.Create();
            rsa.ImportEncryptedPkcs8PrivateKey(password, der, out _);
            return rsa;
        }
        catch (CryptographicException)
        {
            var ec = ECDsa.Create();
            ec.ImportEncryptedPkcs8PrivateKey(password, der, out _);
            return ec;
        }
    }

    private static byte[] DecryptLegacy(PemBlock block, string password, string path)
    {
        if (!block.Headers.TryGetValue("DEK-Info", out var dekInfo) || dekInfo.Split(',') is not [var cipherName, var ivHex])
        {
            throw new FatalException($"unable to decrypt private key {path}: missing or malformed DEK-Info header");
        }

        if (ivHex.Trim() is not { Length: >= 16 } ivText || !ivText.All(char.IsAsciiHexDigit) || ivText.Length % 2 != 0)
        {
            throw new FatalException($"unable to decrypt private key {path}: the DEK-Info IV \"{ivHex.Trim()}\" is not hexadecimal (at least 8 bytes)");
        }

        var iv = Convert.FromHexString(ivText);
        (SymmetricAlgorithm cipher, int keyLength) = cipherName.Trim().ToUpperInvariant() switch
        {
            "AES-128-CBC" => (Aes.Create(), 16),
            "AES-192-CBC" => (Aes.Create(), 24),
            "AES-256-CBC" => ((SymmetricAlgorithm)Aes.Create(), 32),
#pragma warning disable CA5350 // Old keys are encrypted this way; reading them is the point.
            "DES-EDE3-CBC" => (TripleDES.Create(), 24),
#pragma warning restore CA5350
            _ => throw new FatalException($"unable to decrypt private key {path}: unsupported cipher {cipherName} (AES-128/192/256-CBC and DES-EDE3-CBC are supported)"),
        };
        using (cipher)
        {
            if (iv.Length != cipher.BlockSize / 8)
            {
                throw new FatalException($"unable to decrypt private key {path}: the DEK-Info IV has {iv.Length} bytes, {cipherName.Trim()} needs {cipher.BlockSize / 8}");
            }

            cipher.Key = BytesToKey(Encoding.UTF8.GetBytes(password), iv.AsSpan(0, 8), keyLength);
            return cipher.DecryptCbc(block.Body, iv, PaddingMode.PKCS7);
        }
    }

    /// <summary>OpenSSL EVP_BytesToKey with MD5 and one iteration: D_i = MD5(D_{i-1} || password || salt).</summary>
    private static byte[] BytesToKey(byte[] password, ReadOnlySpan<byte> salt, int length)
    {
        var key = new List<byte>(length + 16);
        var previous = Array.Empty<byte>();
        while (key.Count < length)
        {
            var input = new byte[previous.Length + password.Length + salt.Length];
            previous.CopyTo(input, 0);
            password.CopyTo(input, previous.Length);
            salt.CopyTo(input.AsSpan(previous.Length + password.Length));
#pragma warning disable CA5351 // MD5 is what the legacy OpenSSL key format uses; it only derives the decryption key here.
            previous = MD5.HashData(input);
#pragma warning restore CA5351
            key.AddRange(previous);
        }

        return key.GetRange(0, length).ToArray();
    }
}

/// <summary>One PEM block with its RFC 1421 headers (<c>Proc-Type</c>, <c>DEK-Info</c>).</summary>
internal sealed record PemBlock(string Label, IReadOnlyDictionary<string, string> Headers, byte[] Body)
{
    public static List<PemBlock> All(string text)
    {
        var blocks = new List<PemBlock>();
        var position = 0;
        while (true)
        {
            var begin = text.IndexOf("-----BEGIN ", position, StringComparison.Ordinal);
            if (begin < 0)
            {
                return blocks;
            }

            var labelEnd = text.IndexOf("-----", begin + 11, StringComparison.Ordinal);
            if (labelEnd < 0)
            {
                return blocks; // a BEGIN line cut short: no block
            }

            var label = text[(begin + 11)..labelEnd];
            var endMarker = $"-----END {label}-----";
            var end = text.IndexOf(endMarker, labelEnd, StringComparison.Ordinal);
            if (end < 0)
            {
                return blocks;
            }

            var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            var base64 = new StringBuilder();
            foreach (var line in text[(labelEnd + 5)..end].Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                var colon = line.IndexOf(':', StringComparison.Ordinal);
                if (colon > 0)
                {
                    headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
                }
                else
                {
                    base64.Append(line);
                }
            }

            blocks.Add(new PemBlock(label, headers, Convert.FromBase64String(base64.ToString())));
            position = end + endMarker.Length;
        }
    }
}
